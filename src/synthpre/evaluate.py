"""Evaluate one learning-curve point on the fixed real test (and validation) set."""
from __future__ import annotations

import re

import numpy as np

from .atomic import atomic_path, write_json
from .modelfile import load_model
from .shard_files import read_shard
from .trainer import evaluate_metrics, predict

POINT = re.compile(r"(?P<mode>scratch|finetune)(/(?P<labeller>[^/]+)(/k\d+)?)?"
                   r"/n(?P<n>\d+)/s(?P<seed>\d+)")


def parse_point(point: str) -> dict:
    match = POINT.fullmatch(point)
    if match is None:
        raise ValueError(f"--point '{point}' is not 'scratch/n<N>/s<seed>' or "
                         f"'finetune/<labeller>[/k<size>]/n<N>/s<seed>'")
    return {"mode": match["mode"], "labeller": match["labeller"] or "none",
            "n": int(match["n"]), "seed": int(match["seed"])}


# What every trained model records of its budget (synthpre.trainer's summary).
TRAINING_RECORD = ("epochs", "steps", "best_epoch", "stop_reason", "wall_time_s", "n_parameters",
                   "n_pretrain")


def write_parity(path: str, records: list[dict], preds: list) -> None:
    """Reference and predicted per-atom energies and force components, for parity plots."""
    natoms = np.array([len(r["numbers"]) for r in records], dtype=float)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh,
                 energy_ref=np.array([r["energy"] for r in records]) / natoms,
                 energy_pred=np.array([p[0] for p in preds]) / natoms,
                 forces_ref=np.concatenate([r["forces"].ravel() for r in records]),
                 forces_pred=np.concatenate([p[1].ravel() for p in preds]))


def evaluate_point(model_path: str, test_path: str, val_path: str, point: str, out: str,
                   parity_out: str) -> dict:
    info = parse_point(point)
    model, meta = load_model(model_path)
    missing = [k for k in TRAINING_RECORD if k not in meta]
    if missing:
        raise ValueError(f"{model_path}: the model file has no training record {missing} "
                         f"(written by `synthpre train` of an older version?); retrain it")
    test_records = read_shard(test_path)
    test_preds = predict(model, test_records)
    test = evaluate_metrics(model, test_records, preds=test_preds)
    val = evaluate_metrics(model, read_shard(val_path))
    metrics = {
        **info,
        **{f"test_{k}": v for k, v in test.items()},
        **{f"val_{k}": v for k, v in val.items()},
        **{k: meta[k] for k in TRAINING_RECORD if k != "wall_time_s"},
        "train_wall_s": meta["wall_time_s"],
        "model": model_path,
    }
    write_parity(parity_out, test_records, test_preds)
    write_json(out, metrics)
    return metrics
