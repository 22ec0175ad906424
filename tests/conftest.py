"""Shared fixtures: small data sets made with the project's own engines (fast teachers)."""
from __future__ import annotations

from pathlib import Path

import pytest
from defaults import protocol

from synthpre.frames import write_frames
from synthpre.label import label_frames
from synthpre.md import run_trajectory
from synthpre.teachers import get_teacher

QUICK_PROTOCOL = {
    "dump_every_ps": 0.05,
    "stages": [{"name": "melt", "T_start": 6000, "T_end": 6000, "duration_ps": 0.1},
               {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 0.6}],
}


def make_real_like(path, n_traj=4, n_atoms=16, teacher="lcbop"):
    """A stand-in 'real' data set: LCBOP-labelled frames from short LCBOP runs (seconds),
    so tests do not depend on the committed DFT demo set."""
    frames = []
    lcbop = get_teacher(teacher)
    for k in range(n_traj):
        result = run_trajectory(lcbop, {"C": n_atoms}, 2.0 + 0.3 * k, 3000,
                                protocol(**QUICK_PROTOCOL), seed=k, traj_id=f"t{k}", min_distance=1.0)
        for frame in result.frames[2:]:
            frame.info["config_type"] = "bulk_amo" if k % 2 else "liquid"
            frames.append(frame)
    labelled = label_frames(frames, lcbop)
    write_frames(path, labelled)
    return labelled


@pytest.fixture(scope="session")
def real_like_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "real.extxyz"
    make_real_like(path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, real_like_file):
    """The tiny config run to the end once; its real data sit at a path with a space."""
    from snakemake_run import snakemake, write_override

    workdir = tmp_path_factory.mktemp("pipeline")
    real = workdir / "real data.extxyz"
    real.write_bytes(real_like_file.read_bytes())
    write_override(workdir, real)
    snakemake(workdir, "--cores", "2")
    return workdir


def tiny_pretraining_command(tmp_path) -> list[str]:
    """`synthpre train --stage pretrain` of a tiny float64 model on two small trajectories'
    shards (add --out): for checking that several ranks end with a one-process run's weights."""
    import json
    import sys

    from defaults import run_options, train_settings

    from synthpre.frames import write_frames
    from synthpre.shard import build_shards

    frames = make_real_like(tmp_path / "frames.extxyz", n_traj=2, n_atoms=8)
    files = []
    for k in range(2):
        path = tmp_path / f"t{k}.extxyz"
        write_frames(path, [a for a in frames if a.info["traj_id"] == f"t{k}"])
        files.append(str(path))
    build_shards(files, [], str(tmp_path / "shards"), 0.0, 1e9, 0.5, 0, 4, 4.0)
    settings = train_settings("pretrain", model={"num_layers": 1, "num_features": 4,
                                                 "num_basis": 4, "dtype": "float64"},
                              train={"max_epochs": 2, "batch_size": 4})
    return [str(Path(sys.executable).parent / "synthpre"), "train", "--settings",
            json.dumps(settings), "--run-options", run_options(), "--stage", "pretrain", "--manifest",
            str(tmp_path / "shards" / "manifest.json")]

