"""One training job of the pipeline: build or load the model, pick the data, train, save.

Pre-training streams the synthetic shards; fine-tuning starts from a pre-trained model file,
in one of three modes (``FINETUNE_MODES``: every weight trains; ``replay`` adds synthetic
frames of the model's own pre-training data to every batch, ``synthpre.replay``; ``frozen``
keeps the first layers, ``synthpre.freeze``); training from scratch is the same recipe from
fresh weights (the learning-curve baseline).
The trainer works in ``<model dir>/train/`` (checkpoints, metrics.csv); the output model is
written (atomically) only at the end, so a killed job never leaves a model Snakemake takes as
done.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .atomic import folder_lock, read_json
from .composition import fit_per_species, species_counts
from .freeze import freeze
from .job_settings import RUN_FIELDS, strict
from .model import NequIP
from .modelfile import load_model, save_model
from .preemption import request_stop
from .real_data import training_subset
from .replay import Replay, shift_energies
from .shard import pretraining_subset, shard_paths, synthetic_validation
from .points import FINETUNE_MODES
from .predict import predict
from .shard_files import (has_atomic_energies, read_attrs, read_shard, sha256, shard_batches,
                          verify_checksums)
from .trainer import TrainConfig, mean_neighbors, train, world

def train_config(settings: dict, options: dict, device: str) -> TrainConfig:
    """The job's recipe (``synthpre.job_settings.train``: train merged with the stage's own)
    and how it runs (``job_settings.train_run_options``)."""
    run = {k: options[k] for k in RUN_FIELDS["train"]}
    # absent from a job's settings when off: TrainConfig's own default
    recipe = {"per_atom_energy_weight": TrainConfig.per_atom_energy_weight, **settings["train"]}
    return strict(TrainConfig, recipe, "train", device=device, **run)


def require_atomic_energies(paths: list[str], info: dict) -> None:
    """A pre-training with the per-atom energy term needs per-atom labels in every shard;
    a labeller without local energies (fix external teachers, batched GPU labelling) stores
    none, and the job fails naming the shard and the labeller rather than train without."""
    for path in paths:
        if not has_atomic_energies(path):
            raise ValueError(f"pretrain.per_atom_energy_weight > 0 but shard {path} (labeller "
                             f"{info.get('labeller')}) has no per-atom energies ('energies'); "
                             f"set the weight to 0, use a labeller that gives local energies, or, for labels "
                             f"made before synthpre stored them, relabel (--forcerun label)")


def check_compatible(model: NequIP, init: str, species: list[str], r_max: float) -> None:
    """Fine-tuning must not silently change the element set or the cutoff."""
    if sorted(set(species) - set(model.species)):
        raise ValueError(f"cannot fine-tune {init}: the data has element(s) "
                         f"{sorted(set(species) - set(model.species))} but the model knows "
                         f"{model.species}")
    if abs(model.r_max - r_max) > 1e-9:
        raise ValueError(f"cannot fine-tune {init}: the model's cutoff r_max={model.r_max} Å "
                         f"differs from the config's model.r_max={r_max} Å")


def ranks_from_slurm(env: dict) -> dict:
    """torch.distributed's variables for a rank that ``srun`` started (one task per GPU, on
    one or several nodes): rank and size from SLURM, the rendezvous on the node srun was
    launched from (the allocation's first, where task 0 runs), a port derived from the job id
    so jobs sharing a node do not collide. Nothing when torchrun (or nobody) set them. The size
    is the srun step's (``SLURM_STEP_NUM_TASKS``): the batch script itself also sees
    ``SLURM_NTASKS`` and ``SLURM_PROCID=0`` of a several-task allocation, and must stay alone."""
    if "RANK" in env or int(env.get("SLURM_STEP_NUM_TASKS", 1)) <= 1:
        return {}
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"),
            "MASTER_PORT": str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000)}


def join_ranks_and_pick_device() -> str:
    """Join the process group when several ranks run (started by ``torchrun`` on one machine
    or by ``srun`` across nodes): NCCL with one GPU per rank where there are GPUs, gloo on
    CPUs. Returns this rank's device."""
    os.environ.update(ranks_from_slurm(dict(os.environ)))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def fit_shift(model: NequIP, records: list[dict]) -> dict[str, float]:
    """Move the per-species energy shift by the model's least-squares per-atom residual on the
    training data. A pre-trained model needs it when the teacher's isolated-atom reference is
    not physical (SNAP was never fitted to an isolated atom, so its relative energies sit
    eV/atom away from the DFT ones); a fresh model starts ~8 eV/atom from DFT carbon energies
    and would otherwise spend its first hundreds of steps learning that offset through its
    weights (NequIP's default shift is this mean). The paper kept the shift at 0 for both."""
    counts = species_counts([r["numbers"] for r in records], model.species)
    residual = np.array([r["energy"] - e for r, (e, _) in zip(records, predict(model, records))])
    delta = fit_per_species(counts, residual)
    if delta is None:
        # one composition (or dependent ones) cannot tell the species apart: move every
        # species by the same per-atom amount rather than a minimum-norm split
        delta = np.full(len(model.species), residual.sum() / counts.sum())
    with torch.no_grad():
        model.shift += torch.as_tensor(delta, dtype=model.shift.dtype)
    return {s: float(d) for s, d in zip(model.species, delta)}


def replay_source(settings: dict, manifest: str, init: str, init_meta: dict, seed: int,
                  shift_change: dict[str, float]) -> Replay:
    """The replay frames of a fine-tuning job: the very structures ``init`` was pre-trained on
    (its n_pretrain and pre-training seed pick them from ``manifest``'s training shards), with
    energies moved into the fine-tuned model's reference (``synthpre.replay``)."""
    info = read_json(manifest, "shard manifest")
    if info["labeller"] != init_meta.get("labeller"):
        raise ValueError(f"replay: {manifest} holds {info['labeller']} labels but {init} was "
                         f"pre-trained on {init_meta.get('labeller')} labels")
    verify_checksums(Path(manifest).parent, info["shards"], manifest)
    paths = shard_paths(manifest, "train")
    chosen = pretraining_subset(paths, init_meta["n_pretrain"],
                                init_meta["settings"]["train"]["seed"])
    records = []
    for path in (p for p in paths if p in chosen):
        shard = read_shard(path)
        records += [shard[i] for i in chosen[path]]
    return Replay(shift_energies(records, shift_change), settings["replay"]["fraction"],
                  settings["replay"]["weight"], seed)


@dataclasses.dataclass(frozen=True)
class StageRecipe:
    """What a training stage does: its data (the synthetic shards or the real subset), whether
    it starts from a pre-trained model, may fit the energy shift (``train.fit_shift``), replays
    synthetic structures, and freezes layers (``finetune.freeze_layers``)."""
    data: str
    init: bool = False
    fit_shift: bool = True
    replay: bool = False
    freeze: bool = False

    @property
    def reads_manifest(self) -> bool:
        return self.data == "synthetic" or self.replay


RECIPES = {
    "pretrain": StageRecipe(data="synthetic", fit_shift=False),
    "finetune": StageRecipe(data="real", init=True),
    "replay": StageRecipe(data="real", init=True, replay=True),
    "frozen": StageRecipe(data="real", init=True, freeze=True),
    "scratch": StageRecipe(data="real"),
}
assert set(FINETUNE_MODES) == {k for k, r in RECIPES.items() if r.init}


def run_train_job(settings: dict, options: dict, stage: str, out: str,
                  manifest: str | None = None,
                  real_dir: str | None = None, n: int | None = None, seed: int | None = None,
                  init: str | None = None, n_pretrain: int | None = None) -> dict:
    """One pipeline training job: ``stage`` is pretrain (shards of ``manifest``; the first
    ``n_pretrain`` structures by trajectory, or all), a fine-tuning mode (from ``init`` on the
    real subset n, seed; replay also reads ``manifest``) or scratch (from fresh weights).
    ``options``: how it runs (``job_settings.train_run_options``), outside the fingerprint."""
    # SLURM sends SIGTERM at the time limit (SIGUSR1 also works, e.g. from scancel): checkpoint
    # at the next batch and stop; the retried job resumes from <model dir>/train/checkpoint.pt.
    for signum in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, request_stop)
    recipe = RECIPES[stage]
    if recipe.init != (init is not None):
        raise ValueError(f"stage {stage}: --init is needed for {', '.join(FINETUNE_MODES)} "
                         f"and only for them")
    if recipe.reads_manifest != (manifest is not None):
        raise ValueError(f"stage {stage}: --manifest is needed for pretrain and replay and "
                         f"only for them")
    cfg = train_config(settings, options, join_ranks_and_pick_device())
    model_cfg = {**settings["model"], **{k: options[k] for k in RUN_FIELDS["model"]}}
    workdir = Path(out).parent / "train"
    species = list(settings["elements"])
    if recipe.data == "synthetic":
        info = read_json(manifest, "shard manifest")
        verify_checksums(Path(manifest).parent, info["shards"], manifest)
        e0 = info["e0"]
        train_paths = shard_paths(manifest, "train")
        val = synthetic_validation(manifest)
        avg_neighbours = info["stats"]["train"]["mean_neighbours"]  # counted when sharding
        if cfg.per_atom_energy_weight > 0:
            require_atomic_energies(train_paths + shard_paths(manifest, "val"), info)
        subset = None if n_pretrain is None else \
            pretraining_subset(train_paths, n_pretrain, cfg.seed)

        def train_data(epoch):
            return shard_batches(train_paths, cfg.batch_size, cfg.seed, epoch, subset)
        source = {"manifest": manifest, "labeller": info["labeller"],
                  "n_pretrain": info["counts"]["train"] if n_pretrain is None else n_pretrain}
        inputs = {"manifest": manifest}
        name = f"pretrain on {manifest} ({source['n_pretrain']} structures)"
    else:
        cfg = dataclasses.replace(cfg, seed=seed)
        train_data = training_subset(real_dir, n, seed)
        val = read_shard(Path(real_dir) / "val.h5")
        e0 = json.loads(read_attrs(Path(real_dir) / "pool.h5")["e0_json"])
        avg_neighbours = None  # only a fresh model needs it (below)
        source = {"real_dir": real_dir, "n": n, "seed": seed, "n_pretrain": 0}
        inputs = {"pool": Path(real_dir) / "pool.h5", "val": Path(real_dir) / "val.h5"}
        name = f"{stage} on {real_dir} (n={n}, seed={seed})"

    if init:
        model, init_meta = load_model(init, kernel=model_cfg["kernel"],
                                      compile=model_cfg["compile"])
        check_compatible(model, init, species, model_cfg["r_max"])
        if "n_pretrain" not in init_meta:
            raise ValueError(f"{init}: its record has no n_pretrain (not written by "
                             f"`synthpre train --stage pretrain`?)")
        source.update(init=init, n_pretrain=init_meta["n_pretrain"])
        inputs["init"] = init
        if recipe.replay:
            inputs["manifest"] = manifest
    # Everything that determines the result: a checkpoint is resumed only under the same.
    checksums = {key: sha256(path) for key, path in inputs.items()}
    fingerprint = {"stage": stage, "settings": settings, "n": n, "seed": seed,
                   "n_pretrain": n_pretrain, **checksums}
    source["input_sha256"] = checksums
    if not init:
        if avg_neighbours is None:
            avg_neighbours = mean_neighbors(train_data, model_cfg["r_max"])
        torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
        model = NequIP.from_config({**model_cfg, "species": species,
                                    "avg_num_neighbors": avg_neighbours})
    if recipe.fit_shift and settings["fit_shift"]:
        source["shift_change"] = fit_shift(model, train_data)
    replay = None
    if recipe.replay:
        replay = replay_source(settings, manifest, init, init_meta, seed,
                               source.get("shift_change", {}))
        source["replay_structures"] = len(replay.records)
    if recipe.freeze:
        source["frozen_parameters"] = freeze(model, settings["freeze_layers"])
    with folder_lock(workdir, "training") if world()[0] == 0 else contextlib.nullcontext():
        summary = train(model, train_data, val, cfg, workdir,
                        meta={"e0": e0, "stage": stage, **source},
                        fingerprint=fingerprint, name=name, replay=replay)
        history = summary.pop("history")
        meta = {"e0": e0, "stage": stage, **source, **summary, "settings": settings}
        if world()[0] == 0:
            save_model(out, model, meta)
            print(json.dumps(meta, default=str))
            print(f"epochs: {len(history)}")
    return meta
