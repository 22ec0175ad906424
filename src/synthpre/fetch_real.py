"""Fetch a public QM data set with load-atoms (e.g. the paper's C-GAP-17) as extxyz.

load-atoms resolves a data set name to its download and caches it under ``root``; given a
path it reads a local file instead, which is how the tests exercise this offline.
"""
from __future__ import annotations

from pathlib import Path

from .frames import write_frames


def run_fetch_real_job(name_or_path: str, out: str, root: str) -> int:
    from load_atoms import load_dataset

    thing = Path(name_or_path) if Path(name_or_path).exists() else name_or_path
    frames = list(load_dataset(thing, root=root))
    write_frames(out, frames)
    return len(frames)
