"""Training: a plain loop with the paper's protocol.

Loss = force-component MSE + energy_weight x per-atom energy MSE; Adam; an exponential moving
average (EMA) of the weights is what gets validated and saved; early stopping on the EMA
model's validation force RMSE. Every epoch writes ``metrics.csv`` and ``checkpoint.pt``
atomically, and a new call with the same ``out_dir`` resumes exactly where it stopped: the
shuffle of epoch k is drawn from (seed, k), so it needs no saved generator state.

Data parallel: when ``torch.distributed`` is initialised (``torchrun``, or
``torch.multiprocessing.spawn`` + ``init_process_group``; gloo on CPU, nccl on GPU), every
rank draws the same batches and trains on its share of each (structures ``rank::world``);
the loss is normalised by the whole batch's counts and the gradients are summed over ranks
(one ``all_reduce``), so the step is the single-process step on the whole batch. One code
path: a world size of 1 is the plain case. Only rank 0 writes files.

Fine-tuning variants plug in without a second loop: parameters with ``requires_grad`` off
(frozen fine-tuning, ``synthpre.freeze``) stay out of the optimiser, so they keep their values
exactly (and the EMA of an unchanged weight is that weight); a ``replay`` source
(``synthpre.replay``) adds weighted synthetic structures to every batch.
"""
from __future__ import annotations

import copy
import csv
import io
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from .atomic import atomic_path
from .capture import CapturedStep
from .graph import Batch, build_graph, concat
from .model import NequIP, count_parameters
from .modelfile import save_model
from .predict import atomic_energy_rmse, error_metrics, predict_batches
from .preemption import STOP_REQUESTED, Preempted
from .progress import EpochScalars, Progress
from .stats import neighbour_count

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "train_loss", "val_energy_rmse_per_atom", "val_force_rmse", "lr",
                  "wall_time_s", "steps"]


@dataclass
class TrainConfig:
    """A job's recipe (``synthpre.job_settings.train``: the config's ``train`` merged with the
    stage's overrides; the schema holds the defaults, the paper's protocol) and its device."""

    max_epochs: int
    min_steps: int              # gradient steps before any stop: n=10 at batch 10 is 1 step/epoch
    batch_size: int
    val_batch_size: int
    lr: float
    energy_weight: float
    ema_decay: float
    patience: int               # epochs without val force RMSE improving by min_delta
    min_delta: float            # eV/Å
    lr_factor: float            # ReduceLROnPlateau on val force RMSE
    lr_patience: int
    seed: int
    tensorboard: bool           # per-epoch scalars in <out_dir>/tensorboard/ (rank 0)
    loader_workers: int         # processes building a streamed source's graphs (0: this one)
    capture: bool | str         # the whole step as one compiled graph: true, false, auto
    device: str                 # picked in one place: train.join_ranks_and_pick_device
    # pretrain.per_atom_energy_weight (the schema's default 0 is off): a job's settings carry
    # it only when on (job_settings.train), so studies without it rerun nothing
    per_atom_energy_weight: float = 0.0


def mean_neighbors(records: list[dict], r_max: float) -> float:
    """Average neighbours per atom within r_max: the model's message normalisation."""
    n_edges = sum(neighbour_count(r, r_max) for r in records)
    return n_edges / max(1, sum(len(r["numbers"]) for r in records))


def loss_fn(out: dict, batch: Batch, energy_weight: float,
            totals: tuple[int, int] | None = None,
            per_atom_energy_weight: float = 0.0) -> torch.Tensor:
    """Force-component MSE + energy_weight x per-atom energy MSE.

    ``totals`` = (atoms, structures) of the whole batch when ``batch`` is one rank's share:
    the sums are then divided by the whole batch's counts, so the ranks' losses add up to
    the whole batch's loss.
    """
    n_atoms, n_struct = totals or (batch.forces.shape[0], batch.energy.shape[0])
    force_sse = (out["forces"] - batch.forces).pow(2).sum()
    energy_sse = ((out["energy"] - batch.energy) / batch.n_atoms).pow(2).sum()
    loss = force_sse / (3 * n_atoms) + energy_weight * energy_sse / n_struct
    if per_atom_energy_weight > 0:  # off: not even added, so the loss is today's bit for bit
        atomic_sse = (out["atomic_energy"] - batch.atomic_energy).pow(2).sum()
        loss = loss + per_atom_energy_weight * atomic_sse / n_atoms
    return loss


def captured_step(capture: bool | str, device) -> bool:
    """The one place that picks how a training step runs: as one captured, compiled graph
    (``synthpre.capture``) or op by op (with the fast kernel's bodies compiled or not,
    ``model.compile``). ``train.capture`` true or false decides; ``auto`` decides by device,
    as measured (docs/benchmarks.md): on a GPU the op-by-op step is launch-bound
    (thousands of kernels per step), so the captured one; on a CPU, where per-op dispatch
    costs little beside the arithmetic, the op-by-op step with compiled bodies is faster per
    CPU second at the paper's size, and the captured step takes minutes to trace and compile."""
    if capture == "auto":
        return torch.device(device).type == "cuda"
    return bool(capture)


def adam(model: torch.nn.Module, lr: float, fused: bool) -> torch.optim.Adam:
    """Adam over the trainable parameters. ``fused`` (with the captured step): one fused
    kernel for all parameters instead of ~13 ops per parameter tensor (312 of the ~460 ops a
    captured paper-size step still dispatched, 72 fused); the same update to float rounding,
    and the same state, so a checkpoint resumes under either."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                            fused=True if fused else None)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Share(NamedTuple):
    """One rank's part of a training batch, ready for the model: its structures (rank::size)
    as one Batch (None when a last, small batch leaves this rank nothing) and the whole batch's
    (atoms, structures), which normalise the loss so that the ranks' parts add up."""
    batch: Batch | None
    totals: tuple[int, int]


def rank_share(mine: list[Batch], atoms: list[int]) -> Share:
    """This rank's graphs (``batch[rank::size]``) joined, with ``atoms`` per structure of the
    whole batch."""
    return Share(concat(mine) if mine else None, (sum(atoms), len(atoms)))


def records_share(records: list[dict], rank: int, size: int, graph_args: tuple) -> Share:
    """This rank's share of a batch of records: graphs built for its own structures only."""
    return rank_share([build_graph(r, *graph_args) for r in records[rank::size]],
                      [len(r["numbers"]) for r in records])


def gradient_step(model: NequIP, share: Share, energy_weight: float, device,
                  replay: Share | None = None, replay_weight: float = 0.0,
                  captured: CapturedStep | None = None,
                  per_atom_energy_weight: float = 0.0) -> torch.Tensor:
    """Loss and gradients of one batch (``.grad`` set, summed over ranks); returns the loss as
    a 0-d tensor on ``device`` (reading it would make the host wait for the GPU every step).
    ``replay`` adds ``replay_weight`` x its own loss (normalised over itself). ``captured``
    (``synthpre.capture``, of ``model``): the same loss from one compiled graph (without the
    per-atom energy term: ``train`` runs op by op when that term is on). Replay frames are real
    data, so the per-atom term applies to ``share`` only."""
    size = world()[1]
    loss = torch.zeros((), dtype=model.dtype, device=device)
    for part, weight in ((share, 1.0), (replay, replay_weight)):
        if part is not None and part.batch is not None:
            batch = part.batch.to(device, non_blocking=True)
            if captured is not None:
                part_loss = captured(batch, energy_weight, part.totals)[0]
            else:
                part_loss = loss_fn(model(batch), batch, energy_weight, part.totals,
                                    per_atom_energy_weight if part is share else 0.0)
            loss = loss + weight * part_loss
    if loss.requires_grad:
        loss.backward()
        loss = loss.detach()
    if size > 1:
        trained = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trained]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1)])
        dist.all_reduce(flat)  # sum: the shares' losses add up to the whole batch's
        for p, g in zip(trained, flat[:-1].split([q.numel() for q in grads])):
            p.grad = g.view_as(p).clone()
        loss = flat[-1]
    return loss


class _StreamedShares(torch.utils.data.IterableDataset):
    """One epoch of a streaming source as this rank's shares, built where the DataLoader
    iterates it (a worker process: the next batches' neighbour lists are built while this one
    trains). Each batch crosses to the training process as one joined Batch, a dozen tensors
    rather than a dozen per structure, and only this rank's structures become graphs.
    ``skip`` batches (already trained before a resume) are passed over as records."""

    def __init__(self, train_data, epoch: int, skip: int, graph_args: tuple, rank: int,
                 size: int):
        self.train_data, self.epoch, self.skip = train_data, epoch, skip
        self.graph_args, self.rank, self.size = graph_args, rank, size

    def __iter__(self):
        for records in itertools.islice(self.train_data(self.epoch), self.skip, None):
            yield records_share(records, self.rank, self.size, self.graph_args)


def _as_is(batch):
    return batch


def _train_batches(train_data, epoch: int, skip: int, cfg: TrainConfig,
                   graphs: list[Batch] | None, graph_args: tuple) -> Iterable[Share]:
    """This rank's shares of the epoch's batches after the first ``skip`` (every rank walks
    the same batches). A streaming source (pre-training on shards) is read and turned into
    graphs by ``cfg.loader_workers`` DataLoader workers (0: on the training thread), pinned for
    a GPU so the copy overlaps compute; in-memory records have their graphs cached."""
    rank, size = world()
    if callable(train_data):  # streaming source: it owns its (epoch-seeded) order
        workers = cfg.loader_workers
        yield from torch.utils.data.DataLoader(
            _StreamedShares(train_data, epoch, skip, graph_args, rank, size), batch_size=None,
            collate_fn=_as_is, num_workers=workers, prefetch_factor=4 if workers else None,
            pin_memory=torch.device(cfg.device).type == "cuda")
        return
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_data))
    for k in range(skip * cfg.batch_size, len(order), cfg.batch_size):
        batch = [graphs[i] for i in order[k:k + cfg.batch_size]]
        yield rank_share(batch[rank::size], [int(g.n_atoms.sum()) for g in batch])


def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, n_updates: int,
                max_decay: float) -> None:
    """EMA step with torch_ema's warm-up (NequIP's default): early steps forget faster."""
    decay = min(max_decay, (1 + n_updates) / (10 + n_updates))
    with torch.no_grad():  # one fused update of all parameters, no per-tensor loop
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def _read_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # RNG stays on CPU
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise ValueError(f"{path}: not a readable training checkpoint ({err}); delete it to "
                         f"start this training afresh") from err


def _write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    extra = ["val_atomic_energy_rmse"] if history and "val_atomic_energy_rmse" in history[0] \
        else []
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS + extra)
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _stop_reason(state: dict, cfg: TrainConfig) -> str | None:
    """The one stopping rule of every model: never before ``min_steps`` gradient steps; then
    at ``patience`` epochs without improvement, or when ``max_epochs`` are done."""
    if state["ema_updates"] < cfg.min_steps:
        return None
    if state["bad_epochs"] >= cfg.patience:
        return "patience"
    if state["epoch"] >= cfg.max_epochs:  # past max_epochs only to reach min_steps
        return "max_epochs" if state["epoch"] == cfg.max_epochs else "min_steps"
    return None


class TrainingDiverged(ValueError):
    """A non-finite loss or validation error: never a result."""


def _resumable(ckpt: dict, fingerprint: dict, ckpt_path: Path) -> bool:
    """Resume only an unfinished training of this very job; say why not otherwise."""
    stored = ckpt.get("fingerprint")
    if stored != fingerprint:
        changed = sorted(k for k in set(stored or {}) | set(fingerprint)
                         if (stored or {}).get(k) != fingerprint.get(k))
        log.info("checkpoint %s belongs to another job (changed: %s): starting fresh",
                 ckpt_path, ", ".join(changed) or "no fingerprint stored")
        return False
    if ckpt["state"].get("finished"):
        log.info("checkpoint %s is of a finished training whose output was removed "
                 "(e.g. --force): starting fresh", ckpt_path)
        return False
    log.info("resuming from %s (epoch %d, batch %d)", ckpt_path, ckpt["state"]["epoch"] + 1,
             ckpt["state"]["batches_done"])
    return True


def _check_finite(value: float, what: str, where: str) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(f"{where}: {what} is {value}; no model written (the last "
                               f"checkpoint is kept for inspection)")


def train(model: NequIP,
          train_data: list[dict] | Callable[[int], Iterable[list[dict]]],
          val_records: list[dict], cfg: TrainConfig, out_dir, meta: dict | None = None,
          fingerprint: dict | None = None, name: str = "training", replay=None) -> dict:
    """Train ``model`` in place and save the best EMA model to ``out_dir/model.pt``.

    ``train_data`` is a list of records (shuffled per epoch, neighbour lists cached) or a
    callable ``epoch -> iterable of record lists`` for data that does not fit in memory; it
    must give the same batches for the same epoch for resuming to be exact. ``meta`` (e.g.
    ``e0``, data reference) goes into the model file. ``fingerprint`` (JSON-able: everything
    that determines the result) is stored in the checkpoint, which is resumed only by an
    unfinished training with the same fingerprint; otherwise ``out_dir`` starts afresh.
    ``name`` (stage and data) heads error messages. ``replay`` (a ``synthpre.replay.Replay``)
    adds its weighted synthetic structures to every batch. A non-finite loss or validation error
    raises ``TrainingDiverged``. On return ``model`` holds the best EMA weights. Returns a
    summary dict.
    """
    out_dir = Path(out_dir)
    rank, size = world()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if size > 1:
        dist.barrier()
    ckpt_path = out_dir / "checkpoint.pt"
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    if size > 1:  # every rank starts from rank 0's weights
        for p in model.parameters():
            dist.broadcast(p.data, 0)
    ema = copy.deepcopy(model).eval()
    captured = CapturedStep(model) if captured_step(cfg.capture, device) \
        and cfg.per_atom_energy_weight == 0 else None
    optimizer = adam(model, cfg.lr, captured is not None)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    state = {"epoch": 0, "ema_updates": 0, "best": math.inf, "best_epoch": 0,
             "ref": math.inf, "bad_epochs": 0, "wall_time_s": 0.0, "history": [],
             "batches_done": 0, "epoch_losses": [], "finished": False, "stop_reason": None}
    fingerprint = fingerprint or {}
    ckpt = _read_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None and not _resumable(ckpt, fingerprint, ckpt_path):
        ckpt = None
    if ckpt is None and rank == 0:  # nothing of an earlier training may leak into this one
        for stale in ("checkpoint.pt", "metrics.csv", "model.pt"):
            (out_dir / stale).unlink(missing_ok=True)
    if size > 1:
        dist.barrier()  # no rank reads a stale file rank 0 is removing
    if ckpt is not None:
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

    def checkpoint() -> None:
        if rank == 0:
            with atomic_path(ckpt_path) as tmp:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "torch_rng": torch.get_rng_state(), "state": state,
                            "fingerprint": fingerprint}, tmp)

    # a bar over epochs in a terminal (the epoch lines are logged below); TensorBoard if asked
    progress = Progress(name, cfg.max_epochs, unit="epochs", enabled=rank == 0, lines=False)
    scalars = EpochScalars(out_dir / "tensorboard", state["epoch"]) \
        if cfg.tensorboard and rank == 0 else None
    while not state["finished"]:
        start = time.perf_counter()
        epoch = state["epoch"] + 1
        # A resumed epoch skips the batches it already trained on: same batches, same order.
        first = state["batches_done"]
        step_losses = []  # on the device, read once per epoch (or at a stop)

        def settle_losses() -> None:
            """Move this epoch's step losses to the host, failing on the first non-finite."""
            values = torch.stack(step_losses).tolist() if step_losses else []
            for k, value in enumerate(values):
                _check_finite(value, "the training loss",
                              f"{name}, epoch {epoch}, batch {first + k + 1}")
            state["epoch_losses"] += values
            step_losses.clear()

        for share in _train_batches(train_data, epoch, first, cfg, graphs, graph_args):
            optimizer.zero_grad(set_to_none=True)
            extra = None
            if replay is not None:
                extra = records_share(replay.draw(epoch, state["batches_done"], share.totals[1]),
                                      rank, size, graph_args)
            step_losses.append(gradient_step(model, share, cfg.energy_weight, device,
                                             extra, replay.weight if replay else 0.0,
                                             captured, cfg.per_atom_energy_weight))
            optimizer.step()
            n = state["ema_updates"] = state["ema_updates"] + 1
            _update_ema(ema, model, n, cfg.ema_decay)
            state["batches_done"] += 1
            if STOP_REQUESTED.is_set():
                settle_losses()  # no checkpoint of weights a non-finite loss has touched
                state["wall_time_s"] += time.perf_counter() - start
                checkpoint()
                raise Preempted(f"stopped in epoch {epoch} after batch "
                                f"{state['batches_done']}; checkpoint {ckpt_path}")
        settle_losses()
        losses, state["epoch_losses"], state["batches_done"] = state["epoch_losses"], [], 0

        val = error_metrics(val_records, predict_batches(ema, val_batches, device))
        if cfg.per_atom_energy_weight > 0:
            val["atomic_energy_rmse"] = atomic_energy_rmse(ema, val_batches, device)
        val_f = val["force_rmse"]
        for key in ("force_rmse", "energy_rmse_per_atom"):
            _check_finite(val[key], f"the validation {key}", f"{name}, epoch {epoch}")
        scheduler.step(val_f)
        # patience counts epochs since the last improvement by min_delta; any improvement saves
        if val_f < state["ref"] - cfg.min_delta:
            state["ref"], state["bad_epochs"] = val_f, 0
        else:
            state["bad_epochs"] += 1
        if val_f < state["best"]:
            state["best"], state["best_epoch"] = val_f, epoch
            if rank == 0:
                save_model(out_dir / "model.pt", ema,
                           {**meta, "epoch": epoch, "val_force_rmse": val_f,
                            "val_energy_rmse_per_atom": val["energy_rmse_per_atom"]})
        state["epoch"] = epoch
        state["stop_reason"] = _stop_reason(state, cfg)
        state["finished"] = state["stop_reason"] is not None
        state["wall_time_s"] += time.perf_counter() - start
        state["history"].append({
            "epoch": epoch, "train_loss": float(np.mean(losses)),
            "val_energy_rmse_per_atom": val["energy_rmse_per_atom"], "val_force_rmse": val_f,
            "lr": optimizer.param_groups[0]["lr"], "wall_time_s": state["wall_time_s"],
            "steps": state["ema_updates"],
            **({"val_atomic_energy_rmse": val["atomic_energy_rmse"]}
               if "atomic_energy_rmse" in val else {})})
        if rank == 0:
            _write_metrics(out_dir / "metrics.csv", state["history"])
        seconds = time.perf_counter() - start
        log.info("%s: epoch %d, train loss %.5g, val E %.4g eV/atom, val F %.4g eV/Å, lr %.3g, "
                 "%.2f s/epoch, at most %.0f s to max_epochs", name, epoch,
                 state["history"][-1]["train_loss"], val["energy_rmse_per_atom"], val_f,
                 optimizer.param_groups[0]["lr"], seconds,
                 max(0, cfg.max_epochs - epoch) * seconds)
        progress.update(epoch)
        if scalars is not None:
            scalars.add(state["history"][-1])
        checkpoint()
        if size > 1:
            dist.barrier()  # the files are complete before any rank reads them

    progress.close()
    if scalars is not None:
        scalars.close()
    if (out_dir / "model.pt").exists():
        best = torch.load(out_dir / "model.pt", map_location=device, weights_only=True)
        model.load_state_dict(best["state_dict"])
    model.eval()
    log.info("%s: stopped after epoch %d (%d steps): %s; best epoch %d", name, state["epoch"],
             state["ema_updates"], state["stop_reason"], state["best_epoch"])
    return {"epochs": state["epoch"], "steps": state["ema_updates"],
            "best_epoch": state["best_epoch"], "best_val_force_rmse": state["best"],
            "stop_reason": state["stop_reason"], "wall_time_s": state["wall_time_s"],
            "n_parameters": count_parameters(model), "history": state["history"]}
