"""How close each foundation teacher is to the example's own DFT (PBE) labels.

Force-component RMSE against GPAW on the same structures, and per-atom energy RMSE after
each teacher's energies are given the per-element shift that fits the DFT best (teachers and
GPAW use different isolated-atom references, so only energy differences are comparable).

    OMP_NUM_THREADS=1 python benchmarks/teacher_vs_dft.py data/lisi/lisi-dft.extxyz
"""
from __future__ import annotations

import argparse

import numpy as np

from synthpre.frames import read_frames
from synthpre.real_data import fit_e0
from synthpre.teachers import get_teacher


def compare(name: str, frames) -> dict:
    calc = get_teacher(name).make_calculator()
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    e_teacher, df = [], []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = calc
        e_teacher.append(probe.get_potential_energy())
        df.append(probe.get_forces() - atoms.arrays["forces"])
    e_dft = np.array([a.info["energy"] for a in frames])  # E - sum E0(GPAW)
    diff = np.array(e_teacher) - e_dft
    shift = fit_e0(frames, diff, elements)  # best per-element constant between the two
    residual = diff - [sum(shift[s] for s in a.get_chemical_symbols()) for a in frames]
    n = np.array([len(a) for a in frames])
    return {"force_rmse": float(np.sqrt(np.mean(np.concatenate(df) ** 2))),
            "energy_rmse_meV_atom": float(1000 * np.sqrt(np.mean((residual / n) ** 2))),
            "dft_force_rms": float(np.sqrt(np.mean(np.concatenate(
                [a.arrays["forces"] for a in frames]) ** 2)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--teachers", nargs="+", default=["sevennet-0", "chgnet-0.3"])
    args = p.parse_args()
    frames = read_frames(args.data)
    print(f"{len(frames)} structures of {args.data}")
    print("| teacher | force RMSE vs DFT (eV/Å) | energy RMSE (meV/atom, per-element shift fitted) |")
    print("|---|---|---|")
    for name in args.teachers:
        r = compare(name, frames)
        print(f"| {name} | {r['force_rmse']:.3f} | {r['energy_rmse_meV_atom']:.1f} |", flush=True)
    print(f"DFT force-component RMS (the scale): {r['dft_force_rms']:.3f} eV/Å")


if __name__ == "__main__":
    main()
