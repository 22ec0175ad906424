"""stability/job.py: the job's outputs, bad start structures stopping before any MD, a killed
job, and the run options reaching the model."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from .stability_setup import STABILITY, job_settings, save_tiny_model

from synthpre.frames import read_frames, write_frames
from synthpre.stability.curves import run_stability_curves_job
from synthpre.stability.job import run_stability_job


def test_job_writes_reference_then_model_results(starts_file, tmp_path):
    # Frames every 10 fs, so even a short-lived random model leaves frames to relabel.
    settings = job_settings(protocol={"dump_every_ps": 0.01})
    ref = run_stability_job(settings, str(starts_file), tmp_path / "ref.json",
                            tmp_path / "ref.extxyz")
    assert [r["run"] for r in ref["runs"]] == ["start0-v1", "start1-v1"]
    assert ref["summary"]["survival_fraction"] == 1.0
    assert all(sum(r["coordination"].values()) == pytest.approx(1.0) for r in ref["runs"])
    model = save_tiny_model(tmp_path / "model.pt")
    out = run_stability_job(settings, str(starts_file), tmp_path / "m.json",
                            tmp_path / "m.extxyz", model=str(model),
                            reference=str(tmp_path / "ref.json"), point="scratch/n3/s1",
                            options={"compile": False, "engine": "fix_external"})
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["point"] == "scratch/n3/s1" and written["teacher"] == "lcbop"
    frames = read_frames(tmp_path / "m.extxyz")
    assert len(frames) == sum(r["n_frames"] for r in written["runs"])
    for run in written["runs"]:
        assert run["relabel"]["n_frames"] == min(4, run["n_frames"])
        if run["survived"]:
            assert run["rdf_distance"] > 0 and run["teacher_coordination"] is not None
        else:
            assert run["failure"]["reason"] in ("model_error", "non_finite", "lost_atoms",
                                                "close_pair", "large_force", "hot",
                                                "lammps_error")
            assert run["rdf_distance"] is None and run["nve_drift_meV_per_atom_ps"] is None
    assert written["summary"]["n_runs"] == 2 and len(frames) > 0
    assert out["summary"]["relabel"]["force_rmse"] > 0
    assert not list(tmp_path.glob(".tmp-*"))
    table = run_stability_curves_job([str(tmp_path / "m.json")], str(tmp_path / "ref.json"),
                                     str(tmp_path / "stability.csv"), [str(tmp_path / "s.png")])
    csv = pd.read_csv(tmp_path / "stability.csv")
    assert list(csv["mode"]) == ["scratch", "teacher"] and list(csv["labeller"]) == ["none", "lcbop"]
    assert csv.loc[1, "survival_fraction"] == 1.0 and csv.loc[1, "n_runs"] == 2
    fails = sum(not r["survived"] for r in written["runs"])
    assert csv.loc[0, "survival_fraction"] == (2 - fails) / 2 == table.loc[0, "survival_fraction"]
    assert csv.loc[0, "relabel_force_rmse"] == pytest.approx(
        written["summary"]["relabel"]["force_rmse"], rel=1e-5)
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Another protocol than the reference's: refused before any MD.
    other = job_settings(protocol={"dump_every_ps": 0.01, "hold_ps": 0.4})
    with pytest.raises(ValueError, match="another protocol"):
        run_stability_job(other, str(starts_file), tmp_path / "x.json", tmp_path / "x.extxyz",
                          model=str(model), reference=str(tmp_path / "ref.json"),
                          options={"compile": False, "engine": "fix_external"})


def test_bad_start_structures_are_named_before_md(starts_file, tmp_path):
    silicon = tmp_path / "si.extxyz"
    cell = read_frames(starts_file)[0]
    cell.symbols[3] = "Si"
    write_frames(silicon, [cell])
    with pytest.raises(ValueError, match=f"start structures {silicon}: structure 0 has "
                                         r"element\(s\) \['Si'\]"):
        run_stability_job(job_settings(), str(silicon), tmp_path / "o.json", tmp_path / "o.x")
    with pytest.raises(ValueError, match=f"start structures {starts_file}: no periodic cell "
                                         r"with density in \[3.0, 3.5\]"):
        run_stability_job(job_settings(starts={"density_min": 3.0, "density_max": 3.5}),
                          str(starts_file), tmp_path / "o.json", tmp_path / "o.x")
    with pytest.raises(FileNotFoundError, match="start structures /no/such.extxyz not found"):
        run_stability_job(job_settings(), "/no/such.extxyz", tmp_path / "o.json",
                          tmp_path / "o.x")
    # Elements the config allows but the model lacks.
    two = job_settings()
    two["elements"] = ["C", "Si"]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"protocol": STABILITY["protocol"], "teacher": "lcbop", "runs": []}))
    model = save_tiny_model(tmp_path / "model.pt")
    with pytest.raises(ValueError, match=rf"start structures {silicon}: element\(s\) \['Si'\] "
                                         f"unknown to model {model}"):
        run_stability_job(two, str(silicon), tmp_path / "o.json", tmp_path / "o.x",
                          model=str(model), reference=str(ref), options={"compile": False, "engine": "fix_external"})
    assert not (tmp_path / "o.json").exists()


def test_killed_job_leaves_nothing_and_a_rerun_finishes(starts_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    def command(settings):
        (tmp_path / "settings.json").write_text(json.dumps(settings))
        return [sys.executable, "-m", "synthpre", "stability", "--settings",
                f"@{tmp_path / 'settings.json'}", "--starts", str(starts_file),
                "--out", str(tmp_path / "out" / "stability.json"),
                "--frames", str(tmp_path / "out" / "frames.extxyz")]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Four runs of 5 ps that cannot fail; killed as soon as the first has finished.
    long = job_settings(protocol={"hold_ps": 5.0}, velocity_seeds=[1, 2],
                        failure={"min_distance": 0.0, "max_force": 1e9,
                                 "max_temperature_factor": 1e6})
    proc = subprocess.Popen(command(long), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("start0-v1: 5.3 ps, failure: None"), first
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    done = subprocess.run(command(job_settings()), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "stability.json").read_text())["summary"]["n_survived"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["frames.extxyz", "stability.json"]


def test_stability_runs_the_model_compiled_as_the_run_options_say(tmp_path):
    """model.compile reaches the MD calculator (a run option: changing it reruns nothing),
    whatever the model file was trained with."""
    from synthpre.stability.job import model_potential

    path = str(save_tiny_model(tmp_path / "model.pt"))
    for compile in (True, False):
        potential, _ = model_potential(path, compile, "fix_external")
        layers = potential.make_calculator().model.layers
        assert [layer.compiled for layer in layers] == [compile] * len(layers)
