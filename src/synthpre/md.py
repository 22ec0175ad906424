"""Teacher-driven melt-quench-anneal MD in LAMMPS (in-process), frames dumped with provenance.

A trajectory is a random hard-sphere cell run through ordered NVT stages. Temperatures are
numbers (K) or the string ``"anneal"`` (this trajectory's anneal temperature), so one
protocol serves every point of the density x temperature fan-out. A trajectory that blows up
(non-finite energy, lost atoms, temperature far above target, a LAMMPS error) stops and
records why; the frames before it are kept or dropped by ``keep_frames_on_failure``.
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass

from ase import Atoms

from .cells import random_cell
from .job_settings import strict
from .lammps_system import LammpsSystem, mpi_rank
from .md_loop import Segment, TrajectoryResult, run_stages
from .progress import Progress
from .teachers import Teacher

log = logging.getLogger(__name__)


# The MD fan-out: one job per density x anneal temperature x replica, named so that the job
# name alone gives its conditions and its seed (common.smk builds the names at parse time).
JOB = r"d[0-9.]+-T[0-9.]+-r[0-9]+"  # the rule files' wildcard constraint


def md_jobs(synthetic: dict) -> list[str]:
    """Job names of the MD fan-out: density x anneal temperature x replica."""
    return [f"d{d:g}-T{t:g}-r{r}" for d in synthetic["densities"]
            for t in synthetic["anneal_temperatures"] for r in range(synthetic["replicas"])]


def job_seed(job: str, base_seed: int) -> int:
    """A trajectory's seed: fixed by its name and the config's seed, so reruns repeat it."""
    return base_seed * 1_000_003 + zlib.crc32(job.encode()) % 1_000_000


def parse_job(job: str) -> tuple[float, float, int]:
    d, t, r = job.split("-")
    return float(d[1:]), float(t[1:]), int(r[1:])


@dataclass(frozen=True)
class Stage:
    name: str
    t_start: float | str
    t_end: float | str
    duration_ps: float


@dataclass(frozen=True)
class Protocol:
    """``synthetic.protocol`` (the config schema holds the defaults)."""
    stages: list[Stage]
    timestep_fs: float
    tdamp_fs: float
    dump_every_ps: float
    max_temperature_factor: float         # blow-up: T above factor x the stage's target
    keep_frames_on_failure: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "Protocol":
        stages = [Stage(s["name"], s["T_start"], s["T_end"], float(s["duration_ps"]))
                  for s in cfg["stages"]]
        return strict(cls, {**cfg, "stages": stages}, "synthetic.protocol")

    @property
    def dump_every_steps(self) -> int:
        return max(1, round(self.dump_every_ps * 1000.0 / self.timestep_fs))


def _kelvin(value: float | str, anneal_t: float) -> float:
    return float(anneal_t) if value == "anneal" else float(value)


def run_trajectory(teacher: Teacher, composition: dict[str, int], density: float,
                   anneal_t: float, protocol: Protocol, seed: int, traj_id: str,
                   min_distance: float, lammps_args: tuple[str, ...] = ()) -> TrajectoryResult:
    """Run one melt-quench-anneal trajectory and return its frames (all ranks get them)."""
    atoms = random_cell(composition, density, min_distance, seed)
    system = LammpsSystem(atoms, teacher, lammps_args=lammps_args)
    lmp = system.lmp
    dt_ps = protocol.timestep_fs / 1000.0
    # A random start has near-overlaps whose energy would heat the melt by thousands of K
    # in the first femtoseconds; a few steps of minimisation remove them (the melt then erases
    # any memory of the start). FIRE takes its first step from the time step LAMMPS has then
    # (its default), not the run's: the run's is set after, by the stage loop.
    lmp.commands_list(["min_style fire", "minimize 0.0 1.0 50 1000", "reset_timestep 0"])
    provenance = {"density": float(density), "anneal_T": float(anneal_t), "traj_id": traj_id,
                  "teacher": teacher.name}
    segments = []
    for stage in protocol.stages:
        t_a, t_b = _kelvin(stage.t_start, anneal_t), _kelvin(stage.t_end, anneal_t)
        segments.append(Segment(stage.name, round(stage.duration_ps / dt_ps), t_a, t_b,
                                max(t_a, t_b)))
    frames: list[Atoms] = []
    every = protocol.dump_every_steps
    start = time.perf_counter()
    progress = Progress(f"md {traj_id}", sum(s.steps for s in segments), unit="steps",
                        enabled=mpi_rank() == 0)

    def blow_up(target_T: float) -> str | None:
        return _blow_up(system, target_T * protocol.max_temperature_factor)

    def collect(segment: Segment, step: int) -> None:
        progress.update(step, lambda: f"t {step * dt_ps:.2f} ps, T "
                        f"{lmp.get_thermo('temp'):.0f} K, E_pot "
                        f"{system.potential_energy() / len(atoms):.3f} eV/atom, "
                        f"{step * len(atoms) / (time.perf_counter() - start):.0f} "
                        f"atom-steps/s")
        if step % every == 0:
            frame = system.atoms()
            frame.info.update(provenance, time_ps=round(step * dt_ps, 6), stage=segment.name,
                              temperature_K=float(lmp.get_thermo("temp")))
            frames.append(frame)

    end = run_stages(system, segments, timestep_ps=dt_ps, tdamp_ps=protocol.tdamp_fs / 1000.0,
                     T_velocity=segments[0].T_start, seed=seed, every=(every,),
                     checks=[blow_up], on_chunk=collect, label=f"md {traj_id}")
    failure = end.failure or (f"LAMMPS error at step {end.step}: {end.error}"
                              if end.error else None)
    if failure and not protocol.keep_frames_on_failure:
        frames = []
    wall = time.perf_counter() - start
    system.close()
    return TrajectoryResult(frames, failure, end.step, wall, len(atoms), provenance)


def _blow_up(system: LammpsSystem, max_temperature: float) -> str | None:
    """Why this trajectory must stop, or None."""
    if system.callback_error:  # an ASE teacher's calculator raised (see LammpsSystem)
        return system.callback_error
    pe = system.potential_energy()
    temp = float(system.lmp.get_thermo("temp"))
    if not (math.isfinite(pe) and math.isfinite(temp)):
        return f"non-finite energy or temperature (pe={pe}, T={temp})"
    if system.lmp.get_natoms() != system.natoms:
        return f"lost atoms ({system.natoms - system.lmp.get_natoms()} of {system.natoms})"
    if temp > max_temperature:
        return f"temperature {temp:.0f} K above {max_temperature:.0f} K"
    return None


def run_md_job(settings: dict, teacher_name: str, job: str, out_frames: str, out_status: str,
               lammps_args: tuple[str, ...] = ()) -> dict | None:
    """Rule ``md``: one trajectory from ``synthpre.job_settings.md``; writes the frames and
    ``md.json`` (the status contract: failure, n_frames, steps, wall_s, natoms,
    atom_steps_per_s, seed and the provenance). Under ``mpiexec -n N`` every rank runs LAMMPS
    and rank 0 writes; returns the status on rank 0."""
    from .alchemical import alchemical_of
    from .atomic import write_json
    from .cells import cell_composition
    from .frames import write_frames
    from .teachers import get_teacher

    density, anneal_t, _ = parse_job(job)
    alchemical = alchemical_of(settings, teacher_name)  # the source teacher on its element
    if alchemical:
        settings = alchemical.md_settings(settings)
    teacher = get_teacher(alchemical.teacher if alchemical else teacher_name,
                          settings["teachers"])
    seed = job_seed(job, settings["seed"])
    composition = cell_composition(settings["elements"], settings["n_atoms"],
                                   settings.get("composition"))  # optional: one element
    if alchemical:
        density = alchemical.source_density(density, composition)
    if "rattle_relax" in settings:  # synthetic.sampling: rattle-relax, not MD
        from .rattle_relax import RattleRelax, run_chain
        result = run_chain(teacher, composition, density,
                           RattleRelax.from_config(settings["rattle_relax"]), seed,
                           traj_id=f"{teacher_name}/{job}",
                           min_distance=settings["min_distance"], lammps_args=lammps_args)
    else:
        result = run_trajectory(teacher, composition, density, anneal_t,
                                Protocol.from_config(settings["protocol"]), seed,
                                traj_id=f"{teacher_name}/{job}",
                                min_distance=settings["min_distance"], lammps_args=lammps_args)
    if mpi_rank() != 0:
        return None
    status = {**result.info, "failure": result.failure, "n_frames": len(result.frames),
              "steps": result.steps, "wall_s": result.wall_s, "natoms": result.natoms,
              "atom_steps_per_s": result.atom_steps_per_s, "seed": seed}
    write_frames(out_frames, result.frames)
    write_json(out_status, status)
    return status
