#!/usr/bin/env python
"""Remake the silicon example's structures: melt-quench-anneal Si8 cells from the Si SNAP
teacher of configs/silicon.yaml. Their DFT labels are made by the pipeline's own GPAW stage
(``real.source: dft:data/silicon/structures.extxyz``), not by this script.

    python data/silicon/make_silicon_data.py structures   # seconds: SNAP MD -> structures.extxyz
    python data/silicon/make_silicon_data.py stats        # what PROVENANCE.md quotes

Every choice is a constant below; see PROVENANCE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parents[1] / "configs" / "silicon.yaml"  # the teacher is defined there, once

# ---- structure selection (fixed: changing any of it changes the data set) ----
N_ATOMS = 8                           # Si8: cheap for DFT (the new-user study)
DENSITIES = [2.1, 2.33, 2.5]          # g/cm^3: expanded, crystalline, liquid-like (l-Si 2.57)
ANNEAL_T = [600.0, 1000.0, 1400.0, 1800.0]   # K, below and above melting (1687 K)
N_TRAJ = 10                           # trajectory i: DENSITIES[i % 3], ANNEAL_T[i % 4]
SEED0 = 3000
PROTOCOL = {
    "stages": [
        {"name": "melt", "T_start": 3000, "T_end": 3000, "duration_ps": 0.25},
        {"name": "quench", "T_start": 3000, "T_end": "anneal", "duration_ps": 0.25},
        {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 0.5},
    ],
    "timestep_fs": 1.0,
    "tdamp_fs": 100.0,
    "dump_every_ps": 0.25,
    "max_temperature_factor": 3.0,
    "keep_frames_on_failure": False,
}
KEEP_TIMES_PS = [0.75, 1.0]           # middle and end of the anneal: 20 structures
MIN_DISTANCE = 2.0                    # Å, random start (Si-Si bonds 2.35 Å)
MAX_RETRIES = 3


def teacher():
    from synthpre.teachers import get_teacher

    config = yaml.safe_load(CONFIG.read_text())
    return get_teacher(config["synthetic"]["teacher"], config["teachers"])


def make_structures(out: Path) -> list:
    from synthpre.frames import write_frames
    from synthpre.md import Protocol, run_trajectory

    proto, snap = Protocol.from_config(PROTOCOL), teacher()
    selected = []
    for i in range(N_TRAJ):
        density, anneal_t, traj_id = DENSITIES[i % 3], ANNEAL_T[i % 4], f"si-{i:02d}"
        for attempt in range(MAX_RETRIES):
            seed = SEED0 + i + 100_000 * attempt
            res = run_trajectory(snap, {"Si": N_ATOMS}, density, anneal_t, proto, seed,
                                 traj_id, min_distance=MIN_DISTANCE)
            print(f"{traj_id}: density {density} anneal {anneal_t:.0f} K seed {seed}: "
                  f"{len(res.frames)} frames, failure={res.failure}", flush=True)
            if res.failure is None:
                break
        else:
            raise RuntimeError(f"{traj_id}: every attempt failed ({res.failure})")
        by_time = {round(float(a.info["time_ps"]), 6): a for a in res.frames}
        for t in KEEP_TIMES_PS:
            atoms = by_time[t]
            atoms.calc = None
            for key in ("energy", "free_energy"):
                atoms.info.pop(key, None)
            atoms.arrays.pop("forces", None)  # the teacher's labels: DFT labels them later
            atoms.info.update(config_type=atoms.info["stage"], seed=seed, anneal_T=anneal_t,
                              density=density)
            atoms.wrap()
            selected.append(atoms)
    write_frames(out, selected)
    print(f"wrote {out}: {len(selected)} structures", flush=True)
    return selected


def stats(path: Path) -> dict:
    from ase.neighborlist import neighbor_list

    from synthpre.cells import density_of
    from synthpre.frames import read_frames

    frames = read_frames(path)
    closest = [float(neighbor_list("d", a, 3.0).min()) for a in frames]
    out = {"n": len(frames), "natoms": sorted({len(a) for a in frames}),
           "density_min": min(map(density_of, frames)),
           "density_max": max(map(density_of, frames)),
           "closest_pair_min": min(closest), "closest_pair_mean": float(np.mean(closest)),
           "config_types": sorted({a.info["config_type"] for a in frames})}
    print(json.dumps(out, indent=2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["structures", "stats"])
    p.add_argument("--structures", type=Path, default=HERE / "structures.extxyz")
    args = p.parse_args(argv)
    if args.step == "structures":
        make_structures(args.structures)
    else:
        stats(args.structures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
