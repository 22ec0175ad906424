"""One training epoch read from HDF5 shards (``synthpre.shard_files.iter_shards``, shuffled as in
training) vs parsing the same frames from extxyz with ``ase.io.read``. Best of ``--repeats``.

    python benchmarks/bench_shards.py [--frames 5000 --natoms 64] [--append docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from synthpre.frames import labelled_copy, to_record, write_frames
from synthpre.shard_files import iter_shards, write_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_md import replace_section  # noqa: E402


def fake_frames(n_frames: int, natoms: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        atoms = Atoms(["C"] * natoms, positions=rng.random((natoms, 3)) * 9.0,
                      cell=[9.0] * 3, pbc=True)
        atoms.info.update(traj_id=f"t{i // 100}", time_ps=0.1 * (i % 100), density=2.5,
                          anneal_T=3000.0, teacher="snap_c")
        atoms = labelled_copy(atoms, float(rng.normal()) - 1.2 * natoms,
                              rng.normal(size=(natoms, 3)), "snap_c", {"C": -1.2})
        frames.append(atoms)
    return frames


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--natoms", type=int, default=64)
    parser.add_argument("--frames-per-shard", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", help="markdown file: replace its '## Shards vs extxyz'")
    args = parser.parse_args(argv)
    frames = fake_frames(args.frames, args.natoms)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_frames(tmp / "all.extxyz", frames)
        records = [to_record(a, "mem", i) for i, a in enumerate(frames)]
        paths = []
        for k, start in enumerate(range(0, len(records), args.frames_per_shard)):
            paths.append(str(tmp / f"train-{k:05d}.h5"))
            write_shard(paths[-1], records[start:start + args.frames_per_shard])

        def epoch_shards():
            n = sum(1 for _ in iter_shards(paths, np.random.default_rng(0)))
            assert n == args.frames

        def epoch_extxyz():
            n = len(ase.io.read(tmp / "all.extxyz", index=":", format="extxyz"))
            assert n == args.frames

        t_shards = best_of(args.repeats, epoch_shards)
        t_xyz = best_of(max(1, args.repeats - 1), epoch_extxyz)
        size_h5 = sum(Path(p).stat().st_size for p in paths) / 1e6
        size_xyz = (tmp / "all.extxyz").stat().st_size / 1e6
    ratio = t_xyz / t_shards
    table = ["| frames x atoms | extxyz (ase.io.read) | HDF5 shards (iter_shards) | speed-up | "
             "size extxyz / shards |", "|---|---|---|---|---|",
             f"| {args.frames} x {args.natoms} | {t_xyz:.3f} s ({args.frames / t_xyz:,.0f} "
             f"frames/s) | {t_shards:.4f} s ({args.frames / t_shards:,.0f} frames/s) | "
             f"{ratio:.0f}x | {size_xyz:.1f} MB / {size_h5:.1f} MB |"]
    print("\n".join(table))
    if args.append:
        section = ("## Shards vs extxyz\n\n"
                   f"`python benchmarks/bench_shards.py` ({time.strftime('%Y-%m-%d')}, one core of "
                   "a shared 2-core machine, warm page cache). One epoch: every record of "
                   f"{len(paths)} shards of {args.frames_per_shard} streamed by `iter_shards` "
                   "with shuffling (as training reads them) vs `ase.io.read(..., index=':')` "
                   "of the same frames from one extxyz (labels, provenance included); best of "
                   f"{args.repeats}. Target: >= 50x.\n\n" + "\n".join(table) + "\n")
        replace_section(Path(args.append), "## Shards vs extxyz", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
