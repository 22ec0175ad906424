#!/usr/bin/env python
"""Remake the Li-Si example's real data: teacher melt-quench-anneal structures of amorphous
Li-Si alloys, labelled with GPAW (PBE) by the pipeline's own DFT stage.

    python data/lisi/make_lisi_data.py structures   # ~12 min: CHGNet MD -> structures.extxyz
    python data/lisi/make_lisi_data.py label        # ~30 min: GPAW PBE -> lisi-dft.extxyz
    python data/lisi/make_lisi_data.py stats        # ranges quoted in PROVENANCE.md

Labelling is resumable (``--cache-dir``). Every choice is a constant below; see PROVENANCE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent

# ---- structure selection (fixed: changing any of it changes the data set) ----
TEACHER = "chgnet-0.3"   # the faster foundation teacher on one core (docs/benchmarks.md)
# (Li, Si) counts of the 16-atom cells and their densities (g/cm^3): a-Si is ~2.3, Li15Si4 ~1.2
COMPOSITIONS = [(4, 12), (8, 8), (12, 4)]
DENSITY = {(4, 12): 1.9, (8, 8): 1.5, (12, 4): 1.15}
N_TRAJ = 9               # trajectory i: composition i mod 3, density x (0.9, 1.0, 1.1)[i // 3]
ANNEAL_T = [700.0, 1000.0, 1300.0]  # K, trajectory i anneals at ANNEAL_T[(i // 3 + i) % 3]
SEED0 = 2000
PROTOCOL = {
    "stages": [
        {"name": "melt", "T_start": 3000, "T_end": 3000, "duration_ps": 0.25},
        {"name": "quench", "T_start": 3000, "T_end": "anneal", "duration_ps": 0.25},
        {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 0.5},
    ],
    "timestep_fs": 1.0,
    "dump_every_ps": 0.125,
}
KEEP_TIMES_PS = [0.5, 0.75, 1.0]  # end of the quench, middle and end of the anneal
MAX_RETRIES = 3

# ---- DFT contract (PROVENANCE.md): PBE like the foundation models' training data ----
DFT = {"ecut_eV": 400, "xc": "PBE", "kpts": [2, 2, 2], "smearing_eV": 0.1, "spinpol": False}


def trajectories():
    for i in range(N_TRAJ):
        comp = COMPOSITIONS[i % 3]
        density = round(DENSITY[comp] * (0.9, 1.0, 1.1)[i // 3], 4)
        yield i, {"Li": comp[0], "Si": comp[1]}, density, ANNEAL_T[(i // 3 + i) % 3]


def make_structures(out: Path) -> list:
    from synthpre.frames import write_frames
    from synthpre.md import Protocol, run_trajectory
    from synthpre.teachers import get_teacher

    proto = Protocol.from_config(PROTOCOL)
    teacher = get_teacher(TEACHER)
    selected = []
    for i, comp, density, anneal_t in trajectories():
        traj_id = f"lisi-{i:02d}"
        for attempt in range(MAX_RETRIES):
            seed = SEED0 + i + 100_000 * attempt
            res = run_trajectory(teacher, comp, density, anneal_t, proto, seed, traj_id,
                                 min_distance=1.5)
            print(f"{traj_id}: {comp} density {density} anneal {anneal_t:.0f} K seed {seed}: "
                  f"{len(res.frames)} frames, {res.steps / res.wall_s:.1f} steps/s, "
                  f"failure={res.failure}", flush=True)
            if res.failure is None:
                break
        else:
            raise RuntimeError(f"{traj_id}: every attempt failed ({res.failure})")
        by_time = {round(float(a.info["time_ps"]), 6): a for a in res.frames}
        for t in KEEP_TIMES_PS:
            atoms = by_time[t]
            atoms.info["config_type"] = atoms.info["stage"]
            atoms.info["seed"] = seed
            atoms.wrap()
            selected.append(atoms)
        write_frames(out, selected)  # after every trajectory: progress survives a stop
    print(f"wrote {out}: {len(selected)} structures", flush=True)
    return selected


def label(structures: Path, out: Path, cache_dir: Path) -> dict:
    from synthpre.dft import DFTSettings, gpaw_versions, label_with_gpaw

    start = time.perf_counter()
    summary = label_with_gpaw(structures, out, DFTSettings.from_config(DFT), cache_dir,
                              on_error="skip")
    summary.update(gpaw_versions(), wall_s=time.perf_counter() - start)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def stats(path: Path) -> dict:
    from synthpre.frames import read_frames

    frames = read_frames(path)
    e_atom = np.array([a.info["energy"] / len(a) for a in frames])
    forces = np.concatenate([a.arrays["forces"].ravel() for a in frames])
    out = {"n": len(frames), "e0": {k: v for k, v in frames[0].info.items() if k.startswith("e0_")},
           "energy_per_atom_min": float(e_atom.min()), "energy_per_atom_max": float(e_atom.max()),
           "force_component_rms": float(np.sqrt(np.mean(forces**2))),
           "force_component_max_abs": float(np.abs(forces).max()),
           "compositions": sorted({a.get_chemical_formula() for a in frames})}
    print(json.dumps(out, indent=2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["structures", "label", "stats"])
    p.add_argument("--structures", type=Path, default=HERE / "structures.extxyz")
    p.add_argument("--out", type=Path, default=HERE / "lisi-dft.extxyz")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/synthpre-lisi-dft-cache"))
    args = p.parse_args(argv)
    if args.step == "structures":
        make_structures(args.structures)
    elif args.step == "label":
        label(args.structures, args.out, args.cache_dir)
    else:
        stats(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
