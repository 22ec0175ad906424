"""Evaluate one learning-curve point on the fixed real test (and validation) set."""
from __future__ import annotations

import re

from .atomic import write_json
from .modelfile import load_model
from .shards import read_shard
from .train import evaluate_metrics

POINT = re.compile(r"(?P<mode>scratch|finetune)(/(?P<labeller>[^/]+))?/n(?P<n>\d+)/s(?P<seed>\d+)")


def evaluate_point(model_path: str, test_path: str, val_path: str, point: str, out: str) -> dict:
    match = POINT.fullmatch(point)
    if match is None:
        raise ValueError(f"--point '{point}' is not 'scratch/n<N>/s<seed>' or "
                         f"'finetune/<labeller>/n<N>/s<seed>'")
    model, meta = load_model(model_path)
    test = evaluate_metrics(model, read_shard(test_path))
    val = evaluate_metrics(model, read_shard(val_path))
    metrics = {
        "mode": match["mode"], "labeller": match["labeller"] or "none",
        "n": int(match["n"]), "seed": int(match["seed"]),
        **{f"test_{k}": v for k, v in test.items()},
        **{f"val_{k}": v for k, v in val.items()},
        "epochs": meta.get("epochs"), "best_epoch": meta.get("best_epoch"),
        "train_wall_s": meta.get("wall_time_s"), "n_parameters": meta.get("n_parameters"),
        "model": model_path,
    }
    write_json(out, metrics)
    return metrics
