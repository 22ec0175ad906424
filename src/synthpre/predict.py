"""Using a trained model: predictions per structure and their errors against labels. The
model's use, not the training loop's: evaluation, the training loop's validation and the
fine-tuning stages' shift fit all read them from here."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .graph import Batch, collate
from .model import NequIP


def predict_batches(model: NequIP, batches: Iterable[Batch], device) -> list:
    """Per structure (energy, forces) as numpy; forces need autograd, so no no_grad here."""
    results = []
    for batch in batches:
        out = model(batch.to(device))
        energy = out["energy"].detach().cpu().double().numpy()
        forces = out["forces"].detach().cpu().double().numpy()
        splits = np.cumsum(batch.n_atoms.numpy())[:-1]
        results.extend(zip(energy.tolist(), np.split(forces, splits)))
    return results


def atomic_energy_rmse(model: NequIP, batches: Iterable[Batch], device) -> float:
    """RMSE (eV) of the per-atom energies against the labeller's, over all atoms of
    ``batches`` (reported when the per-atom energy term is on)."""
    sse, count = 0.0, 0
    for batch in batches:
        if batch.atomic_energy is None:
            raise ValueError("per-atom energy RMSE: validation frames without per-atom "
                             "energies")
        out = model(batch.to(device))
        diff = out["atomic_energy"].detach().cpu().double() - batch.atomic_energy.double()
        sse, count = sse + float(diff.pow(2).sum()), count + diff.numel()
    return math.sqrt(sse / max(count, 1))


def predict(model: NequIP, records: list[dict], batch_size: int = 20) -> list:
    """[(energy eV, forces (n, 3) eV/Å)] per record, in order."""
    device = next(model.parameters()).device
    chunks = (collate(records[k:k + batch_size], model.species, model.r_max, model.dtype)
              for k in range(0, len(records), batch_size))
    return predict_batches(model, chunks, device)


def error_metrics(records: list[dict], preds: list) -> dict:
    """Energy and force-component errors of ``preds`` against the labels of ``records``."""
    n = np.array([len(r["numbers"]) for r in records], dtype=float)
    de = np.array([p[0] for p in preds]) - np.array([float(r["energy"]) for r in records])
    df = np.concatenate([(p[1] - np.asarray(r["forces"])).ravel()
                         for p, r in zip(preds, records)])
    return {
        "energy_rmse_per_atom": float(np.sqrt(np.mean((de / n) ** 2))),
        "energy_mae_per_atom": float(np.mean(np.abs(de / n))),
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "force_rmse": float(np.sqrt(np.mean(df**2))),
        "force_mae": float(np.mean(np.abs(df))),
        "n_structures": len(records),
        "n_atoms": int(n.sum()),
    }


def evaluate_metrics(model: NequIP, records: list[dict], batch_size: int = 20,
                     preds: list | None = None) -> dict:
    """Energy (eV/atom, and eV per cell) and force-component (eV/Å) errors, per config_type.
    Pass ``preds`` (from ``predict``) when the caller needs them too, to predict only once."""
    preds = predict(model, records, batch_size) if preds is None else preds
    result = error_metrics(records, preds)
    types = sorted({r["config_type"] for r in records if "config_type" in r})
    if types:
        result["per_config_type"] = {
            t: error_metrics(*zip(*[(r, p) for r, p in zip(records, preds)
                               if r.get("config_type") == t]))
            for t in types}
    return result
