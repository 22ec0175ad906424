"""Teacher MD: random cells, density, protocol temperatures, blow-up handling, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from defaults import protocol

from synthpre.cells import density_of, random_cell
from synthpre.md import md_jobs, parse_job
from synthpre.md import run_trajectory
from synthpre.teachers import get_teacher


def test_random_cell_density_and_hard_spheres():
    atoms = random_cell({"C": 64}, 2.7, 1.2, seed=3)
    assert density_of(atoms) == pytest.approx(2.7, rel=1e-12)
    d = atoms.get_all_distances(mic=True)
    assert d[np.triu_indices(64, 1)].min() >= 1.2
    again = random_cell({"C": 64}, 2.7, 1.2, seed=3)
    assert np.array_equal(atoms.positions, again.positions)


def test_random_cell_refuses_impossible_density():
    with pytest.raises(ValueError, match="density 9.0 g/cm\\^3 cannot hold 64 atoms"):
        random_cell({"C": 64}, 9.0, 1.5, seed=0)


def test_md_frames_density_provenance_and_temperature():
    proto = protocol(**{
        "dump_every_ps": 0.1, "tdamp_fs": 50.0,
        "stages": [{"name": "melt", "T_start": 5000, "T_end": 5000, "duration_ps": 0.5},
                   {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 2.0}]})
    result = run_trajectory(get_teacher("lcbop"), {"C": 64}, 2.2, 2500, proto, seed=1,
                            traj_id="lcbop/x", min_distance=1.0)
    assert result.failure is None
    assert len(result.frames) == 25
    assert [f.info["time_ps"] for f in result.frames[:3]] == [0.1, 0.2, 0.3]
    for frame in result.frames:
        assert density_of(frame) == pytest.approx(2.2, rel=1e-9)
        assert frame.info["traj_id"] == "lcbop/x" and frame.info["teacher"] == "lcbop"
    melt = [f.info["temperature_K"] for f in result.frames if f.info["stage"] == "melt"]
    anneal = [f.info["temperature_K"] for f in result.frames
              if f.info["stage"] == "anneal" and f.info["time_ps"] > 1.0]
    # 64 atoms: instantaneous T fluctuates by ~sqrt(2/3N) ~ 10 %; the mean is tight.
    assert np.mean(anneal) == pytest.approx(2500, rel=0.1)
    assert np.mean(melt[2:]) == pytest.approx(5000, rel=0.15)


def test_blow_up_is_caught_and_recorded():
    # A 15 fs time step at 10000 K is far beyond stable integration.
    proto = protocol(**{"timestep_fs": 15.0, "dump_every_ps": 0.03,
                                  "keep_frames_on_failure": False,
                                  "stages": [{"name": "melt", "T_start": 10000, "T_end": 10000,
                                              "duration_ps": 3.0}]})
    result = run_trajectory(get_teacher("lcbop"), {"C": 32}, 3.0, 3000, proto, 0, "boom", min_distance=1.0)
    assert result.failure is not None
    assert result.frames == []
    assert result.steps < 200


def test_teacher_errors_name_the_cause():
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        get_teacher("nope")
    with pytest.raises(ValueError, match=r"does not cover element\(s\) \['O'\]"):
        get_teacher("lcbop").commands(["C", "O"])
    bad = get_teacher("x", {"x": {"pair_style": "no_such_style", "pair_coeff": "* *",
                                  "elements": ["C"]}})
    with pytest.raises(ValueError, match="pair_style 'no_such_style'"):
        bad.check()
    missing = get_teacher("y", {"y": {"pair_style": "tersoff",
                                      "pair_coeff": "* * /no/such/file.tersoff C",
                                      "elements": ["C"]}})
    with pytest.raises(FileNotFoundError, match="/no/such/file.tersoff"):
        missing.check()


def test_job_names_round_trip():
    jobs = md_jobs({"densities": [1.5, 3.0], "anneal_temperatures": [2000, 3500.5],
                    "replicas": 2})
    assert len(jobs) == 8 and jobs[0] == "d1.5-T2000-r0"
    assert parse_job("d3-T3500.5-r1") == (3.0, 3500.5, 1)


def test_md_and_labelling_log_progress(caplog, monkeypatch):
    """Progress lines (here one per dump, interval 0) carry step, time, T, energy and rate."""
    import re

    import synthpre.progress
    from synthpre.label import label_frames

    monkeypatch.setattr(synthpre.progress, "INTERVAL_S", 0.0)
    proto = protocol(**{"dump_every_ps": 0.05, "stages": [
        {"name": "melt", "T_start": 3000, "T_end": 3000, "duration_ps": 0.1}]})
    with caplog.at_level("INFO"):
        result = run_trajectory(get_teacher("tersoff"), {"C": 16}, 2.5, 3000, proto, seed=1,
                                traj_id="p0", min_distance=1.0)
        label_frames(result.frames, get_teacher("lcbop"))
    assert "md p0: stage melt, 3000 -> 3000 K, 100 steps" in caplog.text
    lines = re.findall(r"md p0: (\d+)/100 steps .*t ([\d.]+) ps, T (\d+) K, E_pot (-?[\d.]+) "
                       r"eV/atom, (\d+) atom-steps/s", caplog.text)
    assert [int(s) for s, *_ in lines] == [50, 100]
    assert [float(t) for _, t, *_ in lines] == [0.05, 0.1]
    assert all(500 < float(T) < 9000 and -10 < float(e) < 0 for _, _, T, e, _ in lines)
    assert "label with lcbop: 2/2 frames" in caplog.text
