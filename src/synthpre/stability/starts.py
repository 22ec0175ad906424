"""Rule ``stability_starts``: start cells for the stability stage quenched by the teacher
(``stability.starts.source: teacher``), as the paper started its stability runs from quenched
amorphous cells. ``count`` random cells at densities spread evenly over the window are melted
and quenched by ``synthetic.teacher`` with the synthetic MD's engine (``md.run_trajectory``:
its time step, thermostat and blow-up check); the last frame of each is a start.
"""
from __future__ import annotations

import logging
import os

import numpy as np
from ase import Atoms

from ..cells import cell_composition, check_packing, density_of
from ..frames import write_frames
from ..lammps_system import mpi_rank
from ..md import Protocol, run_trajectory
from ..teachers import get_teacher

from .settings import StartSelection

log = logging.getLogger(__name__)


def quench_protocol(settings: dict) -> Protocol:
    """The quench stages with the synthetic protocol's integration settings, one frame at the
    very end (the dump interval is the whole quench, counted in steps as the stages are)."""
    protocol = settings["protocol"]
    stages = settings["starts"]["quench"]["stages"]
    steps = sum(round(s["duration_ps"] * 1000.0 / protocol["timestep_fs"]) for s in stages)
    return Protocol.from_config({**protocol, "stages": stages, "keep_frames_on_failure": False,
                                 "dump_every_ps": steps * protocol["timestep_fs"] / 1000.0})


def check_window(settings: dict) -> None:
    """Refuse, naming the field, a window whose densest cell could not be placed at random
    (before any MD: at parse time in the Snakefile, and again when run by hand)."""
    starts = settings["starts"]
    composition = cell_composition(settings["elements"], starts["quench"]["n_atoms"],
                                   settings.get("composition"))
    try:
        check_packing([s for s, n in composition.items() for _ in range(n)],
                      starts["density_max"], settings["min_distance"])
    except ValueError as err:
        raise ValueError(f"config field 'stability.starts.density_max': {err}") from None


def run_stability_starts_job(settings: dict, out: str,
                             lammps_args: tuple[str, ...] = ()) -> list[Atoms]:
    """Quench the start cells (``synthpre.job_settings.stability_starts``) and write them to
    ``out`` (extxyz, atomically). A quench that fails names its density and the reason."""
    starts, quench = settings["starts"], settings["starts"]["quench"]
    teacher = get_teacher(settings["teacher"], settings["teachers"])
    composition = cell_composition(settings["elements"], quench["n_atoms"],
                                   settings.get("composition"))
    check_window(settings)
    protocol = quench_protocol(settings)
    densities = np.linspace(starts["density_min"], starts["density_max"], starts["count"])
    cells = []
    for k, density in enumerate(densities):
        seed = settings["seed"] + k
        if mpi_rank() == 0:
            log.info("quench %d of %d: %d atoms at %.3f g/cm^3 (seed %d)", k + 1,
                     len(densities), quench["n_atoms"], density, seed)
        result = run_trajectory(teacher, composition, float(density), 0.0, protocol, seed,
                                f"quench-{k}", settings["min_distance"], lammps_args)
        if result.failure or not result.frames:
            raise ValueError(f"stability.starts.quench: {teacher.name}'s quench of cell {k} at "
                             f"{density:.3f} g/cm^3 failed ({result.failure or 'no frame'})")
        last = result.frames[-1]
        cell = Atoms(last.numbers, positions=last.positions, cell=last.cell, pbc=True)
        cell.info.update(density=float(density), seed=seed, teacher=teacher.name,
                         temperature_K=last.info["temperature_K"])
        cells.append(cell)
    if mpi_rank() == 0:
        write_frames(out, cells)
    return cells


# ---------------------------------------------------------------- start structures

def select_starts(frames: list[Atoms], sel: StartSelection, elements: list[str],
                  source: str) -> list[Atoms]:
    """Periodic cells in the density window, ``count`` of them spread evenly over density
    (deterministic). Errors name ``source`` for unknown elements or an empty selection."""
    for k, atoms in enumerate(frames):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            raise ValueError(f"start structures {source}: structure {k} has element(s) "
                             f"{unknown} outside {elements}")
    # bounds widened by float rounding: a cell made at density_max (source "teacher") is in
    pool = [a for a in frames if a.pbc.all()
            and sel.density_min * (1 - 1e-9) <= density_of(a) <= sel.density_max * (1 + 1e-9)]
    if not pool:
        raise ValueError(f"start structures {source}: no periodic cell with density in "
                         f"[{sel.density_min}, {sel.density_max}] g/cm^3 (config fields "
                         f"'stability.starts.density_min/max'); {len(frames)} structures read")
    pool.sort(key=density_of)
    picks = sorted(set(np.linspace(0, len(pool) - 1, min(sel.count, len(pool)))
                       .round().astype(int).tolist()))
    return [Atoms(pool[i].numbers, positions=pool[i].positions, cell=pool[i].cell, pbc=True)
            for i in picks]


def read_start_source(path: str) -> list[Atoms]:
    """Structures from a real-data shard (``.h5``) or any file ASE reads (extxyz...)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"start structures {path} not found")
    if path.endswith(".h5"):
        from ..shard_files import read_shard

        return [Atoms(r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
                for r in read_shard(path)]
    from ..frames import read_frames

    return read_frames(path)


def check_species(starts: list[Atoms], species: list[str], source: str, model: str) -> None:
    unknown = sorted({s for a in starts for s in a.get_chemical_symbols()} - set(species))
    if unknown:
        raise ValueError(f"start structures {source}: element(s) {unknown} unknown to model "
                         f"{model} (species {species})")
