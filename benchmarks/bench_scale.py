"""Pre-training's data path at scale: peak memory and time per structure for 1k, 10k and 100k
synthetic structures, a few hundred steps each (not whole epochs).

Pre-training streams the shards (``shard_files.shard_batches``: one shard in memory at a
time; graphs built by ``train.loader_workers`` DataLoader workers, or on the training thread
with 0), so memory should stay flat and the time per structure constant as the data grow.
Each size runs with 0 and 1 loader workers, side by side on the same shards. The shards are made cheaply: the demo's
SNAP-labelled 64-atom frames, jittered, repeated up to N structures (labels are not consistent
with the jitter; speed and memory do not care). Each size runs in its own process so its peak
RSS is its own.

    .venv/bin/python benchmarks/bench_scale.py --sizes 1000 10000 100000 --steps 300
"""
from __future__ import annotations

import argparse
import glob
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"r_max": 4.0, "num_layers": 2, "num_features": 16, "l_max": 1, "parity": True,
         "num_basis": 8, "radial_mlp_width": 8, "radial_mlp_depth": 1, "dtype": "float32",
         "kernel": "fast", "compile": False, "species": ["C"], "avg_num_neighbors": 20.0}


def make_shards(out: Path, n: int, labels: str, per_shard: int = 1000) -> list[str]:
    import numpy as np

    from synthpre.frames import read_frames, to_record
    from synthpre.shard_files import write_shard

    files = sorted(glob.glob(f"{labels}/*.extxyz"))
    if not files:
        raise FileNotFoundError(f"no labelled frames in {labels} (run the demo first)")
    base = [to_record(a, f, i) for f in files for i, a in enumerate(read_frames(f))]
    rng = np.random.default_rng(0)
    paths = []
    for k, start in enumerate(range(0, n, per_shard)):
        chunk = []
        for j in range(start, min(n, start + per_shard)):
            r = base[j % len(base)]
            jitter = rng.normal(0, 0.02, (len(r["numbers"]), 3))
            chunk.append({**r, "positions": r["positions"] + jitter, "traj_id": f"t{j // 25}"})
        paths.append(str(out / f"train-{k:05d}.h5"))
        write_shard(paths[-1], chunk)
    return paths


def worker(shard_dir: str, steps: int, batch: int, workers: int) -> dict:
    """One epoch of ``steps`` gradient steps on the shards (fewer if the shards hold fewer
    batches), streamed as pre-training does."""
    import itertools

    import torch

    from synthpre.model import NequIP
    from synthpre.shard_files import read_shard, shard_batches
    from synthpre.trainer import TrainConfig, train

    torch.set_num_threads(1)
    paths = sorted(glob.glob(f"{shard_dir}/train-*.h5"))
    val = read_shard(paths[0])[:20]
    cfg = TrainConfig(max_epochs=1, min_steps=0, batch_size=batch, val_batch_size=20, lr=5e-3,
                      energy_weight=4.0, ema_decay=0.99, patience=1000, min_delta=0.0,
                      lr_factor=0.5, lr_patience=10, seed=0, tensorboard=False,
                      loader_workers=workers, device="cpu")

    def data(epoch):
        return itertools.islice(shard_batches(paths, batch, 0, epoch), steps)

    start, cpu0 = time.perf_counter(), time.process_time()
    train(NequIP.from_config(MODEL), data, val, cfg, Path(shard_dir) / f"run{workers}")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    n = min(steps * batch, sum(len(read_shard(p)) for p in paths))
    return {"loader_workers": workers, "structures": n, "wall_s": wall,
            "ms_per_structure_wall": 1000 * wall / n,
            "ms_per_structure_cpu_main": 1000 * cpu / n,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--labels", default=str(ROOT / "results/demo/labels/snap_c"),
                        help="folder of labelled extxyz frames to repeat")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch, args.loader_workers[0])))
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            make_shards(Path(tmp), n, args.labels)
            made = time.perf_counter() - t0
            for workers in args.loader_workers:  # side by side on the same shards
                out = subprocess.run([sys.executable, __file__, "--worker", tmp, "--steps",
                                      str(args.steps), "--batch", str(args.batch),
                                      "--loader-workers", str(workers)],
                                     capture_output=True, text=True, check=True)
                rows.append({"n_structures": n, "shards_made_s": made,
                             **json.loads(out.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
