"""Synthetic labelled frames -> filtered, trajectory-split HDF5 shards with a manifest."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from .atomic import write_json
from .frames import read_frames
from .records import to_record
from .shards import sha256, write_shard
from .stats import dataset_stats


def split_of(traj_id: str, val_fraction: float, seed: int) -> str:
    """Deterministic per-trajectory split: neighbouring frames are correlated, so whole
    trajectories go to one side."""
    u = (zlib.crc32(f"{seed}:{traj_id}".encode()) & 0xFFFFFFFF) / 2**32
    return "val" if u < val_fraction else "train"


def build_shards(labelled_files: list[str], md_status_files: list[str], out_dir: str,
                 min_time_ps: float, max_force: float, val_fraction: float, seed: int,
                 frames_per_shard: int, r_max: float) -> dict:
    """Filter, split and shard; write ``manifest.json`` last (its presence marks completion)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {"train": [], "val": []}
    dropped = {"before_min_time": 0, "force_above_max": 0}
    e0, labeller, elements = {}, None, set()
    for path in labelled_files:
        for index, atoms in enumerate(read_frames(path)):
            record = to_record(atoms, path, index)
            labeller = atoms.info.get("labeller", labeller)
            e0.update({k[3:]: float(v) for k, v in atoms.info.items() if k.startswith("e0_")})
            elements.update(atoms.get_chemical_symbols())
            if record.get("time_ps", np.inf) < min_time_ps:
                dropped["before_min_time"] += 1
                continue
            if np.abs(record["forces"]).max() > max_force:
                dropped["force_above_max"] += 1
                continue
            by_split[split_of(record["traj_id"], val_fraction, seed)].append(record)
    if not by_split["val"] and len(by_split["train"]) > 1:
        # Too few trajectories for the fraction: move the last trajectory to validation.
        last = by_split["train"][-1]["traj_id"]
        by_split["val"] = [r for r in by_split["train"] if r["traj_id"] == last]
        by_split["train"] = [r for r in by_split["train"] if r["traj_id"] != last]
    failures = []
    for status_file in md_status_files:
        status = json.loads(Path(status_file).read_text())
        if status.get("failure"):
            failures.append({"traj_id": status["traj_id"], "reason": status["failure"]})
    shards = []
    for split, records in by_split.items():
        for k, start in enumerate(range(0, len(records), frames_per_shard)):
            name = f"{split}-{k:05d}.h5"
            write_shard(out / name, records[start:start + frames_per_shard])
            chunk = records[start:start + frames_per_shard]
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
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def shard_paths(manifest_path: str, split: str) -> list[str]:
    manifest = json.loads(Path(manifest_path).read_text())
    folder = os.path.dirname(manifest_path)
    return [os.path.join(folder, s["file"]) for s in manifest["shards"] if s["split"] == split]
