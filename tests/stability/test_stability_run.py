"""stability/run.py: the failure detector, and the teacher vs a broken model on the same
protocol."""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from .stability_setup import CFG, STABILITY, save_tiny_model

from synthpre.frames import read_frames
from synthpre.stability.run import detect, run_md
from synthpre.stability.settings import FailureCriteria, StabilitySettings
from synthpre.teachers import get_teacher


def test_detector_fires_on_a_pair_at_half_an_angstrom():
    atoms = Atoms("C2", positions=[[1, 1, 1], [1.5, 1, 1]], cell=[6, 6, 6], pbc=True)
    crit = CFG.failure
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, crit) == \
        ("close_pair", "pair at 0.500 Å < 0.7 Å")
    no_pair_check = FailureCriteria(10, 0.0, 30.0, 2.0, 0.45, 2.0)  # min_distance 0: off
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, no_pair_check) is None
    atoms.positions[1] = [2.5, 1, 1]
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, crit) is None
    assert detect(atoms, np.full((2, 3), 31.0), -1.0, 300.0, 3000.0, crit)[0] == "large_force"
    assert detect(atoms, np.zeros((2, 3)), -1.0, 6001.0, 3000.0, crit)[0] == "hot"
    assert detect(atoms, np.zeros((2, 3)), float("nan"), 300.0, 3000.0, crit)[0] == "non_finite"
    assert detect(None, None, -1.0, 300.0, 3000.0, crit, lost=1) == ("lost_atoms", "1 atoms lost")


def test_close_pairs_are_judged_per_element_pair():
    si = StabilitySettings.from_config(STABILITY | {"failure": {**STABILITY["failure"],
                                                                "min_distance": "auto"}},
                                       ["Si"]).failure
    dimer = Atoms("Si2", positions=[[1, 1, 1], [1.9, 1, 1]], cell=[8, 8, 8], pbc=True)
    assert detect(dimer, np.zeros((2, 3)), -1.0, 300.0, 1200.0, si) == \
        ("close_pair", "Si-Si pair at 0.900 Å < 1.0 Å")  # carbon's 0.7 would let it pass
    dimer.positions[1] = [2.3, 1, 1]
    assert detect(dimer, np.zeros((2, 3)), -1.0, 300.0, 1200.0, si) is None


def test_md_from_a_cell_with_a_close_pair_fails_at_once():
    atoms = bulk("C", "diamond", a=3.567, cubic=True).repeat(2)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    result = run_md(get_teacher("tersoff"), atoms, CFG.protocol, CFG.failure, 1, "x", 0)
    assert result.failure["reason"] == "close_pair" and result.failure["time_ps"] == 0.0
    assert result.frames == []


def test_teacher_survives_and_broken_model_fails_on_the_same_protocol(starts_file, tmp_path):
    start = read_frames(starts_file)[0]
    teacher = run_md(get_teacher("lcbop"), start, CFG.protocol, CFG.failure, 1, "t", 0)
    assert teacher.failure is None and teacher.time_ps == 0.6
    assert [f.info["time_ps"] for f in teacher.frames][:3] == [0.05, 0.1, 0.15]
    assert len(teacher.frames) == 12 and len(teacher.nve) == 10
    hold_T = [f.info["temperature_K"] for f in teacher.frames if f.info["stage"] == "hold"]
    assert 1500 < np.mean(hold_T) < 4500

    from synthpre.stability.job import model_potential

    broken, _ = model_potential(str(save_tiny_model(tmp_path / "broken.pt", scale=1e4)), False,
                                "fix_external")
    result = run_md(broken, start, CFG.protocol, CFG.failure, 1, "b", 0)
    assert result.failure["reason"] == "large_force" and result.failure["time_ps"] == 0.0
    assert "eV/Å > 30.0 eV/Å" in result.failure["detail"]
    # Without the force criterion the same model heats the cell or crushes a pair within
    # the first check intervals.
    lax = FailureCriteria(10, 0.7, 1e12, 2.0, 0.45, 2.0)
    result = run_md(broken, start, CFG.protocol, lax, 1, "b", 0)
    assert result.failure["reason"] in ("hot", "close_pair", "non_finite", "lost_atoms")
    assert 0 < result.failure["time_ps"] < 0.1
