"""Training, prediction and metrics: a plain loop with the paper's protocol.

Loss = force-component MSE + energy_weight x per-atom energy MSE; Adam; an exponential moving
average (EMA) of the weights is what gets validated and saved; early stopping on the EMA
model's validation force RMSE. Every epoch writes ``metrics.csv`` and ``checkpoint.pt``
atomically, and a new call with the same ``out_dir`` resumes exactly where it stopped: the
shuffle of epoch k is drawn from (seed, k), so it needs no saved generator state.
"""
from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .graph import Batch, build_graph, collate, concat
from .model import NequIP, count_parameters
from .modelfile import save_model
from .stats import neighbour_count

METRIC_COLUMNS = ["epoch", "train_loss", "val_energy_rmse_per_atom", "val_force_rmse", "lr",
                  "wall_time_s"]


@dataclass
class TrainConfig:
    """The paper's protocol by default; the dtype is the model's own (its config)."""

    max_epochs: int = 300
    batch_size: int = 10
    val_batch_size: int = 20
    lr: float = 5e-3
    energy_weight: float = 4.0
    ema_decay: float = 0.99
    patience: int = 40          # epochs without val force RMSE improving by min_delta
    min_delta: float = 0.005    # eV/Å
    lr_factor: float = 0.5      # ReduceLROnPlateau on val force RMSE
    lr_patience: int = 10
    seed: int = 0
    device: str = "cpu"


def mean_neighbors(records: list[dict], r_max: float) -> float:
    """Average neighbours per atom within r_max: the model's message normalisation."""
    n_edges = sum(neighbour_count(r, r_max) for r in records)
    return n_edges / max(1, sum(len(r["numbers"]) for r in records))


def loss_fn(out: dict, batch: Batch, energy_weight: float) -> torch.Tensor:
    force_mse = (out["forces"] - batch.forces).pow(2).mean()
    energy_mse = ((out["energy"] - batch.energy) / batch.n_atoms).pow(2).mean()
    return force_mse + energy_weight * energy_mse


def _predict_batches(model: NequIP, batches: Iterable[Batch], device) -> list:
    """Per structure (energy, forces) as numpy; forces need autograd, so no no_grad here."""
    results = []
    for batch in batches:
        out = model(batch.to(device))
        energy = out["energy"].detach().cpu().double().numpy()
        forces = out["forces"].detach().cpu().double().numpy()
        splits = np.cumsum(batch.n_atoms.numpy())[:-1]
        results.extend(zip(energy.tolist(), np.split(forces, splits)))
    return results


def predict(model: NequIP, records: list[dict], batch_size: int = 20) -> list:
    """[(energy eV, forces (n, 3) eV/Å)] per record, in order."""
    device = next(model.parameters()).device
    chunks = (collate(records[k:k + batch_size], model.species, model.r_max, model.dtype)
              for k in range(0, len(records), batch_size))
    return _predict_batches(model, chunks, device)


def _metrics(records: list[dict], preds: list) -> dict:
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


def evaluate_metrics(model: NequIP, records: list[dict], batch_size: int = 20) -> dict:
    """Energy (eV/atom, and eV per cell) and force-component (eV/Å) errors, per config_type."""
    preds = predict(model, records, batch_size)
    result = _metrics(records, preds)
    types = sorted({r["config_type"] for r in records if "config_type" in r})
    if types:
        result["per_config_type"] = {
            t: _metrics(*zip(*[(r, p) for r, p in zip(records, preds)
                               if r.get("config_type") == t]))
            for t in types}
    return result


def _train_batches(train_data, epoch: int, cfg: TrainConfig, graphs: list[Batch] | None,
                   graph_args: tuple) -> Iterable[Batch]:
    if callable(train_data):  # streaming source: it owns its (epoch-seeded) order
        for records in train_data(epoch):
            yield collate(list(records), *graph_args)
        return
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_data))
    for k in range(0, len(order), cfg.batch_size):
        yield concat([graphs[i] for i in order[k:k + cfg.batch_size]])


def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, n_updates: int,
                max_decay: float) -> None:
    """EMA step with torch_ema's warm-up (NequIP's default): early steps forget faster."""
    decay = min(max_decay, (1 + n_updates) / (10 + n_updates))
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - decay)


def _write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def train(model: NequIP,
          train_data: list[dict] | Callable[[int], Iterable[list[dict]]],
          val_records: list[dict], cfg: TrainConfig, out_dir, meta: dict | None = None) -> dict:
    """Train ``model`` in place and save the best EMA model to ``out_dir/model.pt``.

    ``train_data`` is a list of records (shuffled per epoch, neighbour lists cached) or a
    callable ``epoch -> iterable of record lists`` for data that does not fit in memory; it
    must give the same batches for the same epoch for resuming to be exact. ``meta`` (e.g.
    ``e0``, data reference) goes into the model file. On return ``model`` holds the best EMA
    weights. Returns a summary dict.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    ema = copy.deepcopy(model).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    state = {"epoch": 0, "ema_updates": 0, "best": math.inf, "best_epoch": 0,
             "ref": math.inf, "bad_epochs": 0, "done": False, "wall_time_s": 0.0,
             "history": []}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # RNG stays on CPU
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]

    graph_args = (model.species, model.r_max, model.dtype)
    graphs = None if callable(train_data) else [build_graph(r, *graph_args) for r in train_data]
    val_graphs = [build_graph(r, *graph_args) for r in val_records]
    val_batches = [concat(val_graphs[k:k + cfg.val_batch_size])
                   for k in range(0, len(val_graphs), cfg.val_batch_size)]
    meta = {**(meta or {}), "train_config": asdict(cfg)}

    while not state["done"] and state["epoch"] < cfg.max_epochs:
        start = time.perf_counter()
        epoch = state["epoch"] + 1
        losses = []
        for batch in _train_batches(train_data, epoch, cfg, graphs, graph_args):
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), batch, cfg.energy_weight)
            loss.backward()
            optimizer.step()
            n = state["ema_updates"] = state["ema_updates"] + 1
            _update_ema(ema, model, n, cfg.ema_decay)
            losses.append(loss.item())

        val = _metrics(val_records, _predict_batches(ema, val_batches, device))
        val_f = val["force_rmse"]
        scheduler.step(val_f)
        # patience counts epochs since the last improvement by min_delta; any improvement saves
        if val_f < state["ref"] - cfg.min_delta:
            state["ref"], state["bad_epochs"] = val_f, 0
        else:
            state["bad_epochs"] += 1
        if val_f < state["best"]:
            state["best"], state["best_epoch"] = val_f, epoch
            save_model(out_dir / "model.pt", ema,
                       {**meta, "epoch": epoch, "val_force_rmse": val_f,
                        "val_energy_rmse_per_atom": val["energy_rmse_per_atom"]})
        state["epoch"] = epoch
        state["done"] = state["bad_epochs"] >= cfg.patience
        state["wall_time_s"] += time.perf_counter() - start
        state["history"].append({
            "epoch": epoch, "train_loss": float(np.mean(losses)),
            "val_energy_rmse_per_atom": val["energy_rmse_per_atom"], "val_force_rmse": val_f,
            "lr": optimizer.param_groups[0]["lr"], "wall_time_s": state["wall_time_s"]})
        _write_metrics(out_dir / "metrics.csv", state["history"])
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(), "state": state}, tmp)

    if (out_dir / "model.pt").exists():
        best = torch.load(out_dir / "model.pt", map_location=device, weights_only=True)
        model.load_state_dict(best["state_dict"])
    model.eval()
    return {"epochs": state["epoch"], "best_epoch": state["best_epoch"],
            "best_val_force_rmse": state["best"], "stopped_early": state["done"],
            "wall_time_s": state["wall_time_s"], "n_parameters": count_parameters(model),
            "history": state["history"]}
