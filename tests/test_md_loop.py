"""The one LAMMPS stage loop (synthpre.md_loop) that teacher MD and stability MD share: where
it stops, what a failed check or a LAMMPS error leaves, and that its chunking does not change
the trajectory, so teacher MD (stops at dumps) and stability MD (stops at checks and dumps)
integrate the same way."""
from __future__ import annotations

import numpy as np
from ase.build import bulk

from synthpre.lammps_system import LammpsSystem
from synthpre.md_loop import LoopEnd, Segment, run_stages
from synthpre.teachers import get_teacher

CELL = bulk("C", "diamond", a=3.6, cubic=True).repeat((2, 1, 1))  # 16 atoms
STAGES = [Segment("heat", 60, 300.0, 2000.0, 2000.0), Segment("hold", 40, 2000.0, 2000.0, 2000.0)]


def run(every, checks=(), stages=STAGES, **kw):
    """Positions at every 25th step and the steps at which the checks ran."""
    system = LammpsSystem(CELL, get_teacher("tersoff"))
    frames, checked = {}, []

    def record(target_T):
        checked.append(step_of(system))
        return None

    def collect(segment, step):
        if step % 25 == 0:
            frames[step] = system.atoms().positions

    try:
        end = run_stages(system, stages, timestep_ps=0.001, tdamp_ps=0.05, T_velocity=300.0,
                         seed=11, every=every, checks=[record, *checks], on_chunk=collect, **kw)
    finally:
        system.close()
    return end, frames, checked


def step_of(system):
    return int(system.lmp.get_thermo("step"))


def test_chunking_at_checks_leaves_the_trajectory_bit_for_bit():
    dumps_only, frames_a, checked_a = run((25,))
    with_checks, frames_b, checked_b = run((7, 25))
    assert dumps_only == with_checks == LoopEnd(100)
    assert sorted(frames_a) == sorted(frames_b) == [25, 50, 75, 100]
    for step in frames_a:
        assert np.array_equal(frames_a[step], frames_b[step]), step
    assert checked_a == [25, 50, 60, 75, 100]  # every dump and each stage's end
    assert checked_b[:6] == [7, 14, 21, 25, 28, 35]
    # a check at t = 0 (stability MD's "run 0") does not move the trajectory either
    _, frames_c, checked_c = run((25,), check_at_start=2000.0)
    assert checked_c[0] == 0 and all(np.array_equal(frames_a[s], frames_c[s]) for s in frames_a)


def test_first_failed_check_stops_at_its_step_and_an_error_is_kept():
    def hot_after_30(target_T):
        return ("hot", target_T) if len(calls) >= 30 else calls.append(1)

    calls = []
    end, frames, _ = run((1,), checks=[hot_after_30])
    assert end == LoopEnd(31, ("hot", 2000.0)) and sorted(frames) == [25]
    end, _, _ = run((25,), stages=[Segment("bad", 10, 300.0, -5.0, 300.0)])
    assert end.step == 0 and end.failure is None
    assert "fix integrate all nvt temp 300.0 -5.0" in str(end.error)  # LAMMPS names the line
