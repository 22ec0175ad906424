"""Rattle-and-relax sampling (``synthetic.sampling: rattle-relax``): cheap synthetic frames
without long MD.

After Gardner et al. 2025 (distillation of foundation models; their augment-atoms tool): a
chain starts from a random cell (as MD starts, same density and hard-sphere distance), relaxed
for ``start_relax_steps``; each link then strains the cell (``cell @ (1 + e)``, ``e``
symmetric with entries N(0, ``strain``), atoms moving with the cell), displaces every atom by
N(0, ``sigma``) Å per component, and relaxes the result with the teacher for only
``relax_steps`` steps of LAMMPS ``minimize`` (FIRE), so the kept frame is partly relaxed:
off-equilibrium, with forces the teacher has an opinion on, but not the near-overlaps of a raw
rattle. Every relaxed link is a frame; the next link starts from it, so a chain wanders
through nearby minima. One chain per job of the fan-out (density x replica; the anneal
temperature only names the job), its random numbers from the job's seed: reruns repeat it.

Each link builds a fresh LAMMPS system (through the same ``LammpsSystem`` as md.py), since
the strained cell changes the box; the cost per frame is therefore a LAMMPS set-up plus about
``relax_steps`` force calls, against ``dump_every`` MD steps per MD frame (measured:
docs/benchmarks.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from .cells import random_cell
from .job_settings import strict
from .lammps_system import LammpsSystem, mpi_rank
from .md_loop import TrajectoryResult
from .progress import Progress
from .teachers import Teacher


@dataclass(frozen=True)
class RattleRelax:
    """``synthetic.rattle_relax`` (the config schema holds the defaults)."""
    sigma: float              # Å, displacement per component
    strain: float             # std of the symmetric strain's entries
    relax_steps: int          # minimize iterations after each rattle
    start_relax_steps: int    # minimize iterations of the random start
    chain_length: int         # frames per chain (= per job)

    @classmethod
    def from_config(cls, cfg: dict) -> "RattleRelax":
        return strict(cls, cfg, "synthetic.rattle_relax")


def _relax(atoms: Atoms, teacher: Teacher, steps: int,
           lammps_args: tuple[str, ...]) -> tuple[Atoms, float, np.ndarray, float, np.ndarray]:
    """``atoms`` relaxed by ``steps`` FIRE iterations: (relaxed, E before, F before, E after,
    F after). Zero tolerances: exactly the iterations asked for (or fewer at a minimum)."""
    system = LammpsSystem(atoms, teacher, lammps_args=lammps_args)
    try:
        e_before, f_before = system.single_point()
        system.lmp.commands_list(["min_style fire",
                                  f"minimize 0.0 0.0 {int(steps)} {int(steps) * 10}"])
        e_after, f_after = system.single_point()
        return system.atoms(), e_before, f_before, e_after, f_after
    finally:
        system.close()


def strain_and_rattle(atoms: Atoms, settings: RattleRelax, rng: np.random.Generator) -> Atoms:
    """A copy with the cell strained (atoms moving with it) and every atom displaced."""
    out = atoms.copy()
    e = rng.normal(0.0, settings.strain, (3, 3))
    out.set_cell(np.array(atoms.cell) @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
    out.positions = out.positions + rng.normal(0.0, settings.sigma, out.positions.shape)
    out.wrap()
    return out


def run_chain(teacher: Teacher, composition: dict[str, int], density: float,
              settings: RattleRelax, seed: int, traj_id: str, min_distance: float,
              lammps_args: tuple[str, ...] = ()):
    """One rattle-relax chain; returns md_loop.TrajectoryResult (``steps`` = minimize iterations
    asked for). Frames carry ``chain_step`` and, for the record, the largest force component
    of the rattled structure before its relaxation (``rattled_max_force``)."""

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    atoms, *_ = _relax(random_cell(composition, density, min_distance, seed), teacher,
                       settings.start_relax_steps, lammps_args)
    provenance = {"density": float(density), "traj_id": traj_id, "teacher": teacher.name,
                  "sampling": "rattle-relax"}
    frames, failure = [], None
    progress = Progress(f"rattle-relax {traj_id}", settings.chain_length, unit="frames",
                        enabled=mpi_rank() == 0)
    for step in range(settings.chain_length):
        rattled = strain_and_rattle(atoms, settings, rng)
        try:
            relaxed, _, f_before, energy, _ = _relax(rattled, teacher, settings.relax_steps,
                                                     lammps_args)
        except Exception as err:  # LAMMPS raises plain Exceptions for its own errors
            failure = f"LAMMPS error at chain step {step}: {err}"
            break
        if not math.isfinite(energy):
            failure = f"non-finite energy at chain step {step} ({energy})"
            break
        relaxed.info.update(provenance, chain_step=step,
                            rattled_max_force=float(np.abs(f_before).max()))
        frames.append(relaxed)
        atoms = relaxed
        progress.update(step + 1)
    wall = time.perf_counter() - start
    steps = settings.start_relax_steps + len(frames) * settings.relax_steps
    return TrajectoryResult(frames, failure, steps, wall, len(atoms), provenance)
