"""The one LAMMPS stage loop behind every MD of the pipeline: teacher MD (``md.run_trajectory``,
and through it the stability start quench) and stability MD (``stability.run.run_md``).

They share what is easy to get subtly wrong: velocities seeded from the job's seed, each stage
run in chunks that stop exactly at the caller's check and dump steps (``run N start/stop``
keeps a thermostat ramp spanning the whole stage; ``pre no`` after the first chunk skips a
set-up that would re-neighbour and so change the trajectory), the failure checks after every
chunk, and LAMMPS's own errors, which arrive as plain exceptions. Written once, a run is the
same trajectory whichever caller drives it; the callers keep only what differs: the start
(teacher MD minimises a random cell first), their checks and their failure wording, and
what they collect at each stop (frames, energies, progress).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ase import Atoms

from .lammps_system import LammpsSystem, mpi_rank

log = logging.getLogger(__name__)

# A failure check: given the stage's target temperature (K), why the run must stop, or None.
Check = Callable[[float], Any]


@dataclass(frozen=True)
class Segment:
    """One stage: NVT ramping from ``T_start`` to ``T_end`` (K), or NVE when ``T_start`` is
    None; ``target_T`` is the temperature the checks hold the stage to."""
    name: str
    steps: int
    T_start: float | None
    T_end: float | None
    target_T: float


@dataclass(frozen=True)
class LoopEnd:
    """Where a loop stopped: the step reached, and the first failed check's reason or the
    exception (LAMMPS's, or one raised by a check or a callback) that ended it."""
    step: int
    failure: Any = None
    error: Exception | None = None


def velocity_command(temperature: float, seed: int) -> str:
    """Gaussian velocities at ``temperature`` from the job's seed (LAMMPS wants 1..900000)."""
    return (f"velocity all create {temperature!r} {seed % 900_000 + 1} "
            f"mom yes rot no dist gaussian")


def run_stages(system: LammpsSystem, segments: list[Segment], *, timestep_ps: float,
               tdamp_ps: float, T_velocity: float, seed: int, every: tuple[int, ...],
               checks: list[Check], on_chunk: Callable[[Segment, int], None] | None = None,
               check_at_start: float | None = None, label: str | None = None) -> LoopEnd:
    """Seed velocities and run ``segments`` in order, stopping after every ``every`` steps
    (each interval counted from step 0) and at each stage's end. At each stop the ``checks``
    run in order and the first reason ends the loop; otherwise ``on_chunk(segment, step)``
    collects what the caller keeps. ``check_at_start``: also check the seeded state (after a
    ``run 0``) against this target temperature. ``label``: log each stage under it (rank 0).
    The caller owns ``system`` (and closes it)."""
    lmp = system.lmp
    step = 0

    def failed(target: float):
        for check in checks:
            reason = check(target)
            if reason:
                return reason
        return None

    try:
        lmp.commands_list([f"timestep {timestep_ps!r}", velocity_command(T_velocity, seed)])
        if check_at_start is not None:
            lmp.command("run 0 post no")
            failure = failed(check_at_start)
            if failure:
                return LoopEnd(step, failure)
        for seg in segments:
            nvt = seg.T_start is not None
            if label and mpi_rank() == 0:
                log.info("%s: stage %s, %s, %d steps", label, seg.name,
                         f"{seg.T_start:g} -> {seg.T_end:g} K" if nvt else "NVE", seg.steps)
            lmp.command("fix integrate all " + (f"nvt temp {seg.T_start!r} {seg.T_end!r} "
                                                f"{tdamp_ps!r}" if nvt else "nve"))
            first, end = step, step + seg.steps
            while step < end:
                chunk = min(*(k - step % k for k in every), end - step)
                # A new fix needs LAMMPS's full set-up ("pre yes") before its first chunk only.
                lmp.command(f"run {chunk} start {first} stop {end} "
                            f"pre {'yes' if step == first else 'no'} post no")
                step += chunk
                failure = failed(seg.target_T)
                if failure:
                    return LoopEnd(step, failure)
                if on_chunk:
                    on_chunk(seg, step)
            lmp.command("unfix integrate")
    except Exception as err:  # LAMMPS raises plain Exceptions for its own errors
        return LoopEnd(step, error=err)
    return LoopEnd(step)


@dataclass
class TrajectoryResult:
    """What a sampling job produced (a teacher-MD trajectory or a rattle-relax chain): its
    frames, why it stopped early (or None), and its cost, for rule md's md.json."""
    frames: list[Atoms]
    failure: str | None
    steps: int
    wall_s: float
    natoms: int
    info: dict = field(default_factory=dict)

    @property
    def atom_steps_per_s(self) -> float:
        return self.steps * self.natoms / self.wall_s if self.wall_s > 0 else 0.0
