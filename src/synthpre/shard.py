"""Synthetic labelled frames -> filtered, trajectory-split HDF5 shards with a manifest."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import read_json, write_json
from .frames import read_frames, to_record
from .provenance import code_version
from .shard_files import read_column, read_shard, sha256, verify_checksums, write_shard
from .stats import dataset_stats


def validation_trajectories(traj_ids: set[str], val_fraction: float, seed: int) -> set[str]:
    """Whole trajectories go to validation (neighbouring frames are correlated): a seeded
    choice of round(fraction x count), at least one and never all when there are two or more."""
    ordered = sorted(traj_ids)
    n_val = round(val_fraction * len(ordered))
    if len(ordered) > 1 and val_fraction > 0:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:n_val]
    return {ordered[i] for i in chosen}


def build_shards(labelled_files: list[str], md_status_files: list[str], out_dir: str,
                 min_time_ps: float, max_force: float, val_fraction: float, seed: int,
                 frames_per_shard: int, r_max: float, extra: dict | None = None) -> dict:
    """Filter, split and shard; write ``manifest.json`` last (its presence marks completion).
    ``extra``: fields added to the manifest (the real structures its teachers saw)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept: list[dict] = []
    dropped = {"before_min_time": 0, "force_above_max": 0}
    e0, labeller, elements = {}, None, set()
    for path in labelled_files:
        for index, atoms in enumerate(read_frames(path)):
            record = to_record(atoms, path, index, atomic_energies=True)
            labeller = atoms.info.get("labeller", labeller)
            e0.update({k[3:]: float(v) for k, v in atoms.info.items() if k.startswith("e0_")})
            elements.update(atoms.get_chemical_symbols())
            if record.get("time_ps", np.inf) < min_time_ps:
                dropped["before_min_time"] += 1
                continue
            if np.abs(record["forces"]).max() > max_force:
                dropped["force_above_max"] += 1
                continue
            kept.append(record)
    val_ids = validation_trajectories({r["traj_id"] for r in kept}, val_fraction, seed)
    by_split = {"train": [r for r in kept if r["traj_id"] not in val_ids],
                "val": [r for r in kept if r["traj_id"] in val_ids]}
    failures = []
    for status_file in md_status_files:
        status = read_json(status_file, "MD status file")
        if status.get("failure"):
            failures.append({"traj_id": status["traj_id"], "reason": status["failure"]})
    shards = []
    for split, records in by_split.items():
        for k, start in enumerate(range(0, len(records), frames_per_shard)):
            name = f"{split}-{k:05d}.h5"
            chunk = records[start:start + frames_per_shard]
            write_shard(out / name, chunk)
            shards.append({"file": name, "split": split, "n_structures": len(chunk),
                           "n_atoms": int(sum(len(r["numbers"]) for r in chunk)),
                           "sha256": sha256(out / name)})
    manifest = {
        "labeller": labeller,
        "elements": sorted(elements),
        "e0": e0,
        "shards": shards,
        "counts": {split: len(r) for split, r in by_split.items()},
        "trajectories": {split: sorted({r["traj_id"] for r in recs})
                         for split, recs in by_split.items()},
        "dropped": dropped,
        "failed_trajectories": failures,
        "filters": {"min_time_ps": min_time_ps, "max_force": max_force},
        "stats": {split: dataset_stats(recs, r_max) for split, recs in by_split.items()},
        "code_version": code_version(),
    }
    manifest.update(extra or {})
    write_json(out / "manifest.json", manifest)
    return manifest


def run_shard_job(settings: dict, labelled: list[str], status: list[str], manifest: str) -> dict:
    """Rule ``shard``, from ``synthpre.job_settings.shard``."""
    return build_shards(labelled, status, str(Path(manifest).parent),
                        min_time_ps=settings["filters"]["min_time_ps"],
                        max_force=settings["filters"]["max_force"],
                        val_fraction=settings["val_fraction"], seed=settings["seed"],
                        frames_per_shard=settings["frames_per_shard"], r_max=settings["r_max"],
                        # real structures its fine-tuned teachers saw (teacher_finetune)
                        extra={"teacher_real_structures":
                               settings.get("teacher_real_structures", 0)})


def pretraining_subset(paths: list[str], size: int, seed: int) -> dict[str, list[int]]:
    """The first ``size`` training structures taken trajectory by trajectory, in an order of
    trajectories fixed by ``seed`` (frames in their stored order within each; the last
    trajectory may be cut). Size k is therefore inside size 2k, and whole trajectories are
    kept together as far as the size allows (neighbouring frames are correlated)."""
    where: dict[str, list[tuple[str, int]]] = {}
    for path in paths:
        for index, traj in enumerate(read_column(path, "traj_id")):
            where.setdefault(traj, []).append((path, index))
    available = sum(len(v) for v in where.values())
    if size > available:
        raise ValueError(f"config field 'pretrain.sizes' asks for {size} synthetic structures "
                         f"but the training shards hold {available}")
    names = sorted(where)
    chosen: dict[str, list[int]] = {}
    taken = 0
    for k in np.random.default_rng(seed).permutation(len(names)):
        for path, index in where[names[k]][:size - taken]:
            chosen.setdefault(path, []).append(index)
            taken += 1
        if taken == size:
            break
    return chosen


def shard_paths(manifest_path: str, split: str) -> list[str]:
    """The ``split`` shards a manifest lists, each checked against its checksum there (once
    per process per file), so no reader of shards takes a corrupt or changed one."""
    manifest = read_json(manifest_path, "shard manifest")
    folder = os.path.dirname(manifest_path)
    entries = [s for s in manifest["shards"] if s["split"] == split]
    verify_checksums(folder, entries, manifest_path)
    return [os.path.join(folder, s["file"]) for s in entries]


# Pre-training validates on (and forgetting is measured on) at most this many structures.
MAX_VAL_STRUCTURES = 1000


def synthetic_validation(manifest_path: str) -> list[dict]:
    """The first MAX_VAL_STRUCTURES structures of a labeller's validation shards."""
    records = [r for p in shard_paths(manifest_path, "val") for r in read_shard(p)]
    if not records:
        raise ValueError(f"{manifest_path}: no validation structures (no val shards, or empty "
                         f"ones): synthetic.val_fraction must leave at least one trajectory "
                         f"for validation, and it must not fail or be filtered out")
    return records[:MAX_VAL_STRUCTURES]
