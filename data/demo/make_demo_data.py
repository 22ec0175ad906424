#!/usr/bin/env python
"""Remake the demo's real data set: SNAP melt-quench-anneal structures labelled with GPAW.

    python data/demo/make_demo_data.py structures   # ~15 min: MD -> data/demo/structures.extxyz
    python data/demo/make_demo_data.py label        # ~1.5 h on one core: GPAW -> carbon-dft.extxyz
    python data/demo/make_demo_data.py all          # both
    python data/demo/make_demo_data.py stats        # ranges of the labelled set (docs/demo-data.md)

Labelling is resumable: finished structures are cached (``--cache-dir``) and reused when the
command is run again. Everything here calls the project's functions (``synthpre.md``,
``synthpre.teachers``, ``synthpre.dft``); see PROVENANCE.md for the choices.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # GPAW and its BLAS run serially
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent

# ---- structure selection (fixed: changing any of it changes the data set) ----
N_ATOMS = 32
TEACHER = "snap_c"
DENSITIES = np.round(np.linspace(1.5, 3.5, 16), 4)              # g/cm^3, one trajectory each
ANNEAL_T = [2000.0 + 500.0 * ((3 * i) % 5) for i in range(16)]  # K, 2000..4000, mixed over density
SEED0 = 1000                                                     # trajectory i uses SEED0 + i
PROTOCOL = {
    "stages": [
        {"name": "melt", "T_start": 8000, "T_end": 8000, "duration_ps": 1.0},
        {"name": "quench", "T_start": 8000, "T_end": "anneal", "duration_ps": 1.0},
        {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 4.0},
    ],
    "timestep_fs": 1.0,
    "dump_every_ps": 0.25,
}
# frames kept per trajectory (time in ps from the start): 2 from the quench, 8 from the anneal
KEEP_TIMES_PS = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0]
MAX_RETRIES = 3  # a trajectory that blows up is rerun with seed + 100000 * attempt

# ---- DFT settings: the demo contract (docs/../shared DESIGN "Demo real data") ----
DFT = {"ecut_eV": 500, "xc": "LDA", "kpts": [1, 1, 1], "smearing_eV": 0.1, "spinpol": False}


def make_structures(out: Path) -> list:
    from synthpre.frames import write_frames
    from synthpre.md import Protocol, run_trajectory
    from synthpre.teachers import get_teacher

    proto = Protocol.from_config(PROTOCOL)
    teacher = get_teacher(TEACHER)
    selected = []
    for i, (density, anneal_t) in enumerate(zip(DENSITIES, ANNEAL_T)):
        traj_id = f"demo-{i:02d}"
        for attempt in range(MAX_RETRIES):
            seed = SEED0 + i + 100_000 * attempt
            res = run_trajectory(teacher, {"C": N_ATOMS}, float(density), anneal_t, proto, seed,
                                 traj_id)
            print(f"{traj_id}: density {density} anneal {anneal_t:.0f} K seed {seed}: "
                  f"{len(res.frames)} frames, {res.steps / res.wall_s:.0f} steps/s, "
                  f"failure={res.failure}", flush=True)
            if res.failure is None:
                break
        else:
            raise RuntimeError(f"{traj_id}: every attempt failed ({res.failure})")
        by_time = {round(float(a.info["time_ps"]), 6): a for a in res.frames}
        for t in KEEP_TIMES_PS:
            atoms = by_time[t]
            atoms.info["config_type"] = atoms.info["stage"]  # quench / anneal
            atoms.info["seed"] = seed
            atoms.wrap()
            selected.append(atoms)
    write_frames(out, selected)
    print(f"wrote {out}: {len(selected)} structures", flush=True)
    return selected


def label(structures: Path, out: Path, cache_dir: Path, txt_dir: Path | None) -> dict:
    from synthpre.dft import DFTSettings, gpaw_versions, label_with_gpaw

    settings = DFTSettings.from_config(DFT)
    start = time.perf_counter()
    # a structure whose SCF fails is left out (and listed), not fatal for the whole set
    summary = label_with_gpaw(structures, out, settings, cache_dir, txt_dir=txt_dir,
                              on_error="skip")
    summary.update(gpaw_versions(), wall_s=time.perf_counter() - start)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def stats(path: Path) -> dict:
    """The numbers docs/demo-data.md quotes: per-atom energy range, force RMS, counts."""
    from synthpre.frames import read_frames

    frames = read_frames(path)
    e_atom = np.array([a.info["energy"] / len(a) for a in frames])
    forces = np.concatenate([a.arrays["forces"].ravel() for a in frames])
    by_type = {}
    for ct in sorted({str(a.info.get("config_type")) for a in frames}):
        sel = [a for a in frames if str(a.info.get("config_type")) == ct]
        f = np.concatenate([a.arrays["forces"].ravel() for a in sel])
        e = np.array([a.info["energy"] / len(a) for a in sel])
        by_type[ct] = {"n": len(sel), "energy_per_atom_min": float(e.min()),
                       "energy_per_atom_max": float(e.max()),
                       "force_component_rms": float(np.sqrt(np.mean(f**2)))}
    out = {"n": len(frames), "e0_C": float(frames[0].info["e0_C"]),
           "energy_per_atom_min": float(e_atom.min()), "energy_per_atom_max": float(e_atom.max()),
           "energy_per_atom_mean": float(e_atom.mean()),
           "force_component_rms": float(np.sqrt(np.mean(forces**2))),
           "force_component_max_abs": float(np.abs(forces).max()),
           "densities": sorted({float(a.info["density"]) for a in frames}),
           "by_config_type": by_type}
    print(json.dumps(out, indent=2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["structures", "label", "all", "stats"])
    p.add_argument("--structures", type=Path, default=HERE / "structures.extxyz")
    p.add_argument("--out", type=Path, default=HERE / "carbon-dft.extxyz")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/synthpre-dft-cache"))
    p.add_argument("--txt-dir", type=Path, default=None, help="keep GPAW's text logs here")
    args = p.parse_args(argv)
    if args.step in ("structures", "all"):
        make_structures(args.structures)
    if args.step in ("label", "all"):
        label(args.structures, args.out, args.cache_dir, args.txt_dir)
    if args.step == "stats":
        stats(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
