"""Evaluate one learning-curve point on the fixed real test (and validation) set, and a
fine-tuned model also on its labeller's synthetic validation set beside the pre-trained model
it started from: how much of the pre-training it forgot."""
from __future__ import annotations

import numpy as np

from . import points
from .atomic import atomic_path, read_json, write_json
from .provenance import code_version
from .modelfile import load_model
from .replay import shift_energies
from .shard import synthetic_validation
from .shard_files import read_shard
from .predict import evaluate_metrics, predict


def point_record(point: str) -> dict:
    """The point's fields as metrics.json records them (synthpre.points names the folders)."""
    place = points.parse(point)
    if place.mode == "pretrain":
        raise ValueError(f"--point '{point}': a pre-trained model is evaluated as its "
                         f"pretrained/<labeller>[/k<size>]/n0/s<seed> point")
    return {"mode": place.mode, "labeller": place.labeller, "n": place.n, "seed": place.seed}


def before_finetuning(model, real_dir: str | None, shift_n: int, seed: int) -> dict:
    """The n=0 point: the pre-trained model as fine-tuning starts it, before any gradient
    step. With finetune.fit_shift (``shift_n`` > 0) its per-species energy shift is fitted to
    the seed's smallest training subset, exactly as fine-tuning at that n begins; forces do
    not depend on the shift. Returns the shift change (empty when none was fitted)."""
    if shift_n <= 0:
        return {}
    if real_dir is None:
        raise ValueError("--fit-shift-n needs --real-dir (the real data folder with pool.h5)")
    from .real_data import training_subset
    from .train import fit_shift

    return fit_shift(model, training_subset(real_dir, shift_n, seed))


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


def synthetic_errors(model_path: str, records: list[dict]) -> dict:
    """Energy and force errors of a model on synthetic structures, in the model's own energy
    reference: the labels move by the shift change its fine-tuning applied (none for a
    pre-trained model), as replay's labels do (``synthpre.replay``)."""
    model, meta = load_model(model_path)
    found = evaluate_metrics(model, shift_energies(records, meta.get("shift_change", {})))
    return {"energy_rmse_per_atom": found["energy_rmse_per_atom"],
            "force_rmse": found["force_rmse"]}


def forgetting(model_path: str, init_path: str, manifest: str) -> dict:
    """The fine-tuned and the pre-trained model's errors on the labeller's synthetic
    validation set, the structures pre-training validated on."""
    records = synthetic_validation(manifest)
    if not records:
        raise ValueError(f"{manifest}: no synthetic validation structures to measure "
                         f"forgetting on (synthetic.val_fraction is 0?)")
    return {f"{prefix}synthetic_val_{key}": value
            for prefix, path in (("", model_path), ("pretrained_", init_path))
            for key, value in synthetic_errors(path, records).items()}


def teacher_knowledge(mode: str, synthetic_manifest: str | None) -> dict:
    """Real structures the teachers of the point's synthetic data saw (fine-tuned teachers,
    synthpre.teacher_finetune): 0 for scratch, from the manifest for a fine-tuned point; a
    pretrained/n0 point has no manifest input (the curve's CSV fills it per labeller)."""
    if mode == "scratch":
        return {"teacher_real_structures": 0}
    if synthetic_manifest is None:
        return {}
    manifest = read_json(synthetic_manifest, "shard manifest")
    return {"teacher_real_structures": int(manifest.get("teacher_real_structures", 0))}


def run_evaluate_job(model_path: str, test_path: str, val_path: str, point: str, out: str,
                     parity_out: str, init: str | None = None,
                     synthetic_manifest: str | None = None, real_dir: str | None = None,
                     shift_n: int = 0) -> dict:
    """Errors of one point; a fine-tuned point (``init`` and ``synthetic_manifest`` given,
    and only then) also gets its forgetting. A ``pretrained/.../n0/s<seed>`` point is the
    pre-trained model before fine-tuning (``before_finetuning``): no training budget."""
    info = point_record(point)
    if (info["mode"] in ("scratch", "pretrained")) != (init is None or synthetic_manifest is None):
        raise ValueError(f"--point {point}: --init and --synthetic-val are needed for a "
                         f"fine-tuned point and only for one")
    if shift_n and info["mode"] != "pretrained":
        raise ValueError(f"--point {point}: --fit-shift-n is for a pretrained/.../n0 point")
    model, meta = load_model(model_path)
    missing = [k for k in TRAINING_RECORD if k not in meta]
    if missing:
        raise ValueError(f"{model_path}: the model file has no training record {missing} "
                         f"(written by `synthpre train` of an older version?); retrain it")
    if info["mode"] == "pretrained":
        shift_change = before_finetuning(model, real_dir, shift_n, info["seed"])
        # no fine-tuning happened: its budget is zero (the pre-training's is in its model file)
        meta = {**meta, "epochs": 0, "steps": 0, "best_epoch": 0, "wall_time_s": 0.0,
                "stop_reason": "not fine-tuned", "shift_change": shift_change,
                "shift_fitted_on_n": shift_n}
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
        **({"shift_fitted_on_n": meta["shift_fitted_on_n"]} if info["mode"] == "pretrained"
           else {}),
        # the code that evaluated, and the code that trained (provenance.other_versions)
        "code_version": code_version(),
        "model_code_version": meta.get("code_version"),
        **(forgetting(model_path, init, synthetic_manifest) if init else {}),
        **teacher_knowledge(info["mode"], synthetic_manifest),
    }
    write_parity(parity_out, test_records, test_preds)
    write_json(out, metrics)
    return metrics
