"""Reruns you can trust: after a finished tiny run, changing the study reruns exactly what the
change touches; a rerun never continues another job's checkpoint; bad or corrupt input fails
naming the file or config field and leaves no output."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from defaults import run_options, train_settings
import yaml

from synthpre.shard_files import sha256

from snakemake_run import REPO, SNAKEMAKE, planned_jobs, snakemake, write_override

SYNTHPRE = str(Path(sys.executable).parent / "synthpre")


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory):
    """A private copy of the finished tiny run (metadata and times kept), brought up to date."""
    workdir = tmp_path_factory.mktemp("reruns") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    snakemake(workdir, "--cores", "2")
    assert planned_jobs(workdir) == {}
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    # tiny: 2 labellers x 2 pre-training sizes (4 and all) = 4 pre-trained models; every
    # model also runs in MD (stability) and the stability table is remade
    ({"finetune": {"n_train": [3, 4, 6]}},
     {"finetune": 4, "scratch": 1, "evaluate": 5, "aggregate": 1, "stability": 5,
      "stability_curves": 1}),
    ({"finetune": {"seeds": [1, 2]}},  # and the new seed's n=0 points (evaluate_pretrained)
     {"finetune": 8, "scratch": 2, "evaluate": 10, "evaluate_pretrained": 4, "aggregate": 1,
      "stability": 10, "stability_curves": 1}),
    ({"synthetic": {"labellers": ["snap_c", "lcbop", "tersoff"]}},
     {"label": 2, "shard": 1, "pretrain": 2, "finetune": 4, "evaluate": 4,
      "evaluate_pretrained": 2, "aggregate": 1, "stability": 6, "stability_curves": 1}),
    ({"pretrain": {"sizes": [2, 4, "all"]}},
     {"pretrain": 2, "finetune": 4, "evaluate": 4, "evaluate_pretrained": 2, "aggregate": 1,
      "stability": 6, "stability_curves": 1}),
    # a new fine-tuning mode: its own jobs only; finetune and scratch stay
    ({"finetune": {"modes": ["finetune", "replay"]}},
     {"replay": 8, "evaluate": 8, "aggregate": 1, "stability": 8, "stability_curves": 1}),
    ({"finetune": {"lr": 0.001}},
     {"finetune": 8, "scratch": 2, "evaluate": 10, "aggregate": 1, "stability": 10,
      "stability_curves": 1}),
    ({"pretrain": {"lr": 0.002}},
     {"pretrain": 4, "finetune": 8, "evaluate": 8, "evaluate_pretrained": 4, "aggregate": 1,
      "stability": 12, "stability_curves": 1}),
    ({"real": {"test_fraction": 0.3}},  # new test cells: new stability starts for all
     {"real_data": 1, "finetune": 8, "scratch": 2, "evaluate": 10, "evaluate_pretrained": 4,
      "aggregate": 1,
      "stability_reference": 1, "stability": 14, "stability_curves": 1}),
    # how trainings run, not what they compute (job_settings.RUN_FIELDS): nothing reruns
    ({"model": {"compile": True}, "train": {"loader_workers": 1, "tensorboard": True}}, {}),
    # the teacher's quench of start cells, unused while the starts are test cells
    ({"stability": {"starts": {"quench": {"n_atoms": 32}}}}, {}),
    ({"stability": {"protocol": {"hold_ps": 0.2}}},
     {"stability_reference": 1, "stability": 14, "stability_curves": 1}),
])
def test_a_change_schedules_exactly_the_jobs_it_touches(finished, change, expected):
    if "real" in change:  # keep the override's source, change one split setting
        source = yaml.safe_load((finished / "override.yaml").read_text())["real"]["source"]
        change = {"real": {"source": source, **change["real"]}}
    assert planned_jobs(finished, **change) == expected


@pytest.mark.slow
def test_new_learning_rates_retrain_from_fresh_weights_and_the_new_pretrained_model(finished):
    """finetune.lr and pretrain.lr change: both rerun (as planned above), the first epoch of
    every fine-tune and scratch run uses the new lr, and each fine-tune starts from the new
    pre-trained model (the old checkpoints were not continued).

    Only the models checked here are rebuilt (every pre-trained model, both scratch points and
    three fine-tunes, one of them from a k4 model): the other fine-tunes, the evaluations and
    the stability runs are the same jobs again and took 3/4 of this test's time. The plan
    left afterwards is exactly those jobs: the rebuilt models are not scheduled again."""
    run = finished / "results/tiny"
    old_ft = torch.load(run / "finetune/lcbop/n6/s1/model.pt", weights_only=True)
    override = yaml.safe_load((finished / "override.yaml").read_text())
    override.update(finetune={"lr": 0.001}, pretrain={"lr": 0.002})
    (finished / "override.yaml").write_text(yaml.safe_dump(override))
    checked = ("scratch/n3/s1", "scratch/n6/s1", "finetune/snap_c/n3/s1",
               "finetune/lcbop/n6/s1", "finetune/lcbop/k4/n3/s1")
    pretrained = ("snap_c", "lcbop", "snap_c/k4")  # lcbop/k4: under finetune/lcbop/k4
    models = tuple(f"results/tiny/{point}/model.pt"
                   for point in checked + tuple(f"pretrain/{pre}" for pre in pretrained))
    everything = {"pretrain": 4, "finetune": 8, "scratch": 2, "evaluate": 10,
                  "evaluate_pretrained": 4, "aggregate": 1, "stability": 14,
                  "stability_curves": 1}
    assert planned_jobs(finished) == everything
    snakemake(finished, "--cores", "2", targets=models)
    for pre in pretrained:
        first = (run / f"pretrain/{pre}/train/metrics.csv").read_text().splitlines()[1]
        assert float(first.split(",")[4]) == 0.002
    for point in checked:
        rows = (run / point / "train/metrics.csv").read_text().splitlines()
        lrs = [float(r.split(",")[4]) for r in rows[1:]]
        assert len(lrs) >= 2 and set(lrs) == {0.001}, point
        assert "starting fresh" in (run / f"logs/{point}.log").read_text()
    new_ft = torch.load(run / "finetune/lcbop/n6/s1/model.pt", weights_only=True)
    assert new_ft["meta"]["input_sha256"]["init"] == sha256(run / "pretrain/lcbop/model.pt")
    assert new_ft["meta"]["input_sha256"]["init"] != old_ft["meta"]["input_sha256"]["init"]
    assert new_ft["meta"]["settings"]["train"]["lr"] == 0.001
    rest = {rule: n for rule, n in everything.items() if rule not in ("pretrain", "scratch")}
    assert planned_jobs(finished) == {**rest, "finetune": 8 - 3}


def _pretrain(shards: Path, out: Path) -> subprocess.CompletedProcess:
    settings = train_settings("pretrain", model={"num_layers": 1, "num_features": 4,
                                                 "num_basis": 4},
                              train={"max_epochs": 1, "batch_size": 5})
    return subprocess.run([SYNTHPRE, "train", "--settings", json.dumps(settings), "--run-options", run_options(), "--stage",
                           "pretrain", "--manifest", str(shards / "manifest.json"), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_nan_in_a_shard_fails_pretraining_naming_the_shard(finished, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(finished / "results/tiny/shards/lcbop", shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    entry = next(e for e in manifest["shards"] if e["split"] == "train")
    with h5py.File(shards / entry["file"], "r+") as h5:
        h5["energy"][1] = np.nan
    entry["sha256"] = sha256(shards / entry["file"])  # a NaN written by a labeller, not damage
    (shards / "manifest.json").write_text(json.dumps(manifest))
    proc = _pretrain(shards, tmp_path / "pre" / "model.pt")
    assert proc.returncode == 2
    assert f"{shards / entry['file']}: non-finite energy in structure 1" in proc.stderr
    assert not (tmp_path / "pre" / "model.pt").exists()


@pytest.mark.slow
def test_truncated_shard_and_empty_model_are_named(finished, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(finished / "results/tiny/shards/lcbop", shards)
    shard = shards / "train-00000.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    proc = _pretrain(shards, tmp_path / "pre" / "model.pt")
    assert proc.returncode == 2
    assert f"{shard}: sha256" in proc.stderr and "differs from" in proc.stderr
    assert "Traceback" not in proc.stderr
    from synthpre.shard_files import read_shard
    with pytest.raises(ValueError, match=f"{shard}: sha256"):  # every reader checks the manifest
        read_shard(shard)
    loose = tmp_path / "loose.h5"  # a shard no manifest lists: the HDF5 reader names it
    shutil.copy(shard, loose)
    with pytest.raises(ValueError, match=f"{loose}: not a readable shard"):
        read_shard(loose)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    real = finished / "results/tiny/real"
    proc = subprocess.run([SYNTHPRE, "evaluate", "--model", str(empty), "--test",
                           str(real / "test.h5"), "--val", str(real / "val.h5"), "--point",
                           "scratch/n3/s1", "--out", str(tmp_path / "m.json"), "--parity",
                           str(tmp_path / "p.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"{empty}: not a readable synthpre model file" in proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path, real_like_file):
    from synthpre.real_data import ingest

    ingest(str(real_like_file), str(tmp_path / "real"), ["C"])
    workdir = tmp_path / "out" / "train"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from synthpre.atomic import folder_lock\n"
         f"with folder_lock({str(workdir)!r}, 'training'):\n"
         "    print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        settings = train_settings("scratch", model={"num_layers": 1, "num_features": 4,
                                                    "num_basis": 4},
                                  train={"max_epochs": 1, "batch_size": 2})
        proc = subprocess.run([SYNTHPRE, "train", "--settings", json.dumps(settings), "--run-options", run_options(), "--stage",
                               "scratch", "--real-dir", str(tmp_path / "real"), "--n", "3",
                               "--seed", "1", "--out", str(tmp_path / "out" / "model.pt")],
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
    assert proc.returncode == 2
    assert f"{workdir} is being written by another training (pid {holder.pid}" in proc.stderr
    assert not (tmp_path / "out" / "model.pt").exists()


def test_bad_real_data_content_stops_before_any_job(tmp_path, real_like_file):
    from synthpre.frames import read_frames, write_frames

    frames = read_frames(real_like_file)
    frames[2].arrays.pop("forces")
    bad = tmp_path / "bad real.extxyz"
    write_frames(bad, frames)
    write_override(tmp_path, bad)
    proc = snakemake(tmp_path, "--cores", "1", "-n", check=False)
    assert proc.returncode != 0
    assert f"config field 'real.source': {bad}, structure 2: missing forces key" \
        in proc.stdout + proc.stderr


def test_snakefile_runs_a_config_from_another_directory(tmp_path, real_like_file):
    """`-s path/to/Snakefile --configfile configs/tiny.yaml` from elsewhere: the config
    stands alone (the schema beside the Snakefile fills the rest)."""
    write_override(tmp_path, real_like_file)
    proc = subprocess.run([*SNAKEMAKE, "-n", "--configfile", str(REPO / "configs/tiny.yaml"),
                           str(tmp_path / "override.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pretrain" in proc.stdout
