"""Stability of a fitted potential in MD: objective failure criteria, and for what survives,
how far it strays from its teacher.

A run starts from a start cell with velocities at ``T_initial``, ramps NVT to ``T_anneal``
over ``warmup_ps``, holds for ``hold_ps`` (the paper's protocol), then runs ``nve_ps`` without
thermostat to measure energy drift. The potential is any ``Teacher``: a model file of this
pipeline enters LAMMPS through ``fix external`` (the teacher-MD driver, ``LammpsSystem``), a
LAMMPS teacher runs natively, so the model and its teacher run the identical protocol.

Every ``check_every_fs`` (and at t = 0) the detector (``detect``) stops the run at the first
of: an error in the model, non-finite energy/temperature/forces, lost atoms, a pair closer
than ``min_distance``, a force component above ``max_force``, or a temperature above
``max_temperature_factor`` x the stage's target. A failure is a result (reason, time), not an
error. The run itself is the shared stage loop (``md_loop.run_stages``); the settings are
``stability.settings``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ..cells import density_of
from ..lammps_system import LammpsSystem
from ..md_loop import Segment, run_stages
from ..teachers import Teacher
from .structure import (closest_violation)
from .settings import FailureCriteria, StabilityProtocol


REASONS = ("model_error", "non_finite", "lost_atoms", "close_pair", "large_force", "hot",
           "lammps_error")


# ---------------------------------------------------------------- failure detection

def detect(atoms: Atoms | None, forces: np.ndarray | None, energy: float, temperature: float,
           target_T: float, crit: FailureCriteria, lost: int = 0) -> tuple[str, str] | None:
    """(reason, detail) of the first failed criterion for this state, or None.

    ``lost`` is how many atoms LAMMPS no longer has (then ``atoms``/``forces`` may be None)."""
    if not (math.isfinite(energy) and math.isfinite(temperature)):
        return "non_finite", f"energy {energy} eV, temperature {temperature} K"
    if lost:
        return "lost_atoms", f"{lost} atoms lost"
    if not (np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
        return "non_finite", "non-finite forces or positions"
    limits = crit.min_distance
    if isinstance(limits, str):
        raise ValueError("stability.failure.min_distance 'auto' is not resolved: parse the "
                         "settings with the elements (StabilitySettings.from_config)")
    if isinstance(limits, dict):
        limits = {pair: v for pair, v in limits.items() if v > 0}
    closest = closest_violation(atoms, limits) if limits else None
    if closest is not None:
        d, pair, limit = closest
        name = f"{pair} pair" if isinstance(crit.min_distance, dict) else "pair"
        return "close_pair", f"{name} at {d:.3f} Å < {limit} Å"
    fmax = float(np.abs(forces).max()) if len(forces) else 0.0
    if fmax > crit.max_force:
        return "large_force", f"force component {fmax:.3g} eV/Å > {crit.max_force} eV/Å"
    t_max = crit.max_temperature_factor * target_T
    if temperature > t_max:
        return "hot", f"temperature {temperature:.0f} K > {t_max:.0f} K"
    return None


# ---------------------------------------------------------------- one MD run

@dataclass
class RunResult:
    run_id: str
    start: int
    seed: int
    natoms: int
    density: float
    failure: dict | None          # {"reason", "time_ps", "detail"}
    time_ps: float                # simulated time reached
    frames: list[Atoms]           # dumped frames (all passed the detector)
    nve: list[tuple[float, float]] = field(default_factory=list)  # (time_ps, total energy eV)
    wall_s: float = 0.0
    cpu_s: float = 0.0            # this process's CPU time: comparable on a shared machine


def run_md(potential: Teacher, start: Atoms, protocol: StabilityProtocol,
           crit: FailureCriteria, seed: int, run_id: str, start_index: int,
           lammps_args: tuple[str, ...] = ()) -> RunResult:
    """One stability run of ``potential`` from ``start`` (see the module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    system = LammpsSystem(start, potential, lammps_args=lammps_args)
    lmp = system.lmp
    dt_ps = protocol.timestep_fs / 1000.0
    check = max(1, round(crit.check_every_fs / protocol.timestep_fs))
    dump = max(1, protocol.steps(protocol.dump_every_ps))
    result = RunResult(run_id, start_index, seed, len(start), density_of(start), None, 0.0, [])
    segments = [Segment(name, nsteps, t_a, t_b,
                        protocol.T_anneal if t_a is None else max(t_a, t_b))
                for name, t_a, t_b, nsteps in protocol.stages()]

    def model_error(target_T: float) -> tuple[str, str] | None:
        return ("model_error", system.callback_error) if system.callback_error else None

    def state_failure(target_T: float) -> tuple[str, str] | None:
        lost = system.natoms - int(lmp.get_natoms())
        atoms, forces = (None, None) if lost else (system.atoms(), system.forces())
        return detect(atoms, forces, system.potential_energy(), float(lmp.get_thermo("temp")),
                      target_T, crit, lost)

    def collect(segment: Segment, step: int) -> None:
        if segment.name == "nve":
            result.nve.append((step * dt_ps, float(lmp.get_thermo("etotal"))))
        if step % dump == 0:
            result.frames.append(_frame(system, run_id, step * dt_ps, segment.name))

    try:
        end = run_stages(system, segments, timestep_ps=dt_ps,
                         tdamp_ps=protocol.tdamp_fs / 1000.0, T_velocity=protocol.T_initial,
                         seed=seed, every=(check, dump), checks=[model_error, state_failure],
                         on_chunk=collect, check_at_start=protocol.T_anneal)
    finally:
        system.close()
    bad = end.failure or (("lammps_error", f"{type(end.error).__name__}: {end.error}")
                          if end.error else None)
    if bad:
        result.failure = {"reason": bad[0], "time_ps": round(end.step * dt_ps, 6),
                          "detail": bad[1]}
    result.time_ps = round(end.step * dt_ps, 6)
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - c0
    return result


def _frame(system: LammpsSystem, run_id: str, time_ps: float, stage: str) -> Atoms:
    frame = system.atoms()
    frame.info.update(run=run_id, time_ps=round(time_ps, 6), stage=stage,
                      temperature_K=float(system.lmp.get_thermo("temp")),
                      model_energy=system.potential_energy())
    frame.arrays["model_forces"] = system.forces()
    return frame
