"""stability/analysis.py: teacher relabelling and the unphysical rule."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from .stability_setup import CFG, job_settings, save_tiny_model

from synthpre.frames import read_frames
from synthpre.stability.analysis import pooled_relabel, relabel
from synthpre.stability.curves import run_stability_curves_job
from synthpre.stability.job import run_stability_job
from synthpre.stability.run import run_md
from synthpre.teachers import get_teacher


def test_relabelling_the_teachers_own_run_gives_zero_error(starts_file):
    start = read_frames(starts_file)[1]
    lcbop = get_teacher("lcbop")
    result = run_md(lcbop, start, CFG.protocol, CFG.failure, 2, "t", 1)
    e0 = {"C": -1.5}
    part = relabel(result.frames, 5, lcbop, e0, e0)
    assert part["n_frames"] == 5 and part["n_force"] == 5 * 32 * 3
    pooled = pooled_relabel([part])
    assert pooled["force_rmse"] < 1e-6 and abs(pooled["energy_offset_per_atom"]) < 1e-9


def test_a_survivor_far_from_its_teacher_is_unphysical_in_the_json_and_the_csv(starts_file,
                                                                                tmp_path):
    """A random model that cannot fail (the detector is off) survives, but its forces are
    far from the teacher's: with the teacher agreeing exactly with the 'real' test labels
    (gap 0) and a claimed test error of 0.01 eV/Å it is unphysical; a lax factor keeps it."""
    from synthpre.lammps_system import single_point
    from synthpre.shard_files import write_shard

    lcbop = get_teacher("lcbop")
    records = []
    for atoms in read_frames(starts_file):
        energy, forces = single_point(atoms, lcbop)
        records.append({"numbers": atoms.numbers, "positions": atoms.positions,
                        "cell": atoms.cell.array, "pbc": atoms.pbc, "energy": energy,
                        "forces": forces})
    write_shard(tmp_path / "test.h5", records)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_force_rmse": 0.01}))
    off = {"min_distance": 0.0, "max_force": 1e9, "max_temperature_factor": 1e6}
    short = {"warmup_ps": 0.02, "hold_ps": 0.05, "nve_ps": 0.02, "dump_every_ps": 0.01}
    settings = job_settings(protocol=short, failure=off, starts={"count": 1})
    ref = run_stability_job(settings, str(starts_file), tmp_path / "ref.json",
                            tmp_path / "ref.extxyz", test=str(tmp_path / "test.h5"))
    assert ref["teacher_vs_real_test"]["force_rmse"] < 1e-6
    assert [r["outcome"] for r in ref["runs"]] == ["survived"]
    model = str(save_tiny_model(tmp_path / "model.pt"))
    for factor, outcome in ((2.0, "unphysical"), (1e6, "survived")):
        lax = job_settings(protocol=short, failure={**off, "unphysical_factor": factor},
                           starts={"count": 1})
        out = run_stability_job(lax, str(starts_file), tmp_path / f"{factor}.json",
                                tmp_path / f"{factor}.extxyz", model=model,
                                reference=str(tmp_path / "ref.json"),
                                metrics=str(tmp_path / "metrics.json"), point="scratch/n3/s1",
                                options={"compile": False, "engine": "fix_external"})
        (run,) = json.loads((tmp_path / f"{factor}.json").read_text())["runs"]
        assert run["survived"] and run["outcome"] == outcome
        assert out["unphysical_rule"]["force_rmse_threshold"] == pytest.approx(factor * 0.01,
                                                                                rel=1e-3)
        assert out["summary"]["n_unphysical"] == (outcome == "unphysical")
    run_stability_curves_job([str(tmp_path / "2.0.json")], str(tmp_path / "ref.json"),
                             str(tmp_path / "stability.csv"), [str(tmp_path / "s.png")])
    csv = pd.read_csv(tmp_path / "stability.csv").set_index("mode")
    assert csv.loc["scratch", "n_unphysical"] == 1 and csv.loc["scratch", "stable_fraction"] == 0
    assert csv.loc["scratch", "survival_fraction"] == 1.0
    assert csv.loc["scratch", "unphysical_force_threshold"] == pytest.approx(0.02, rel=1e-3)
    assert csv.loc["teacher", "stable_fraction"] == 1.0
    assert csv.loc["scratch", "cn_C-C"] >= 0  # coordination per element pair
