"""Foundation teachers on one core: MD step time through ``fix external`` and labelling
throughput, one frame per call vs batched (``synthpre.foundation.label_batch``).

MD: a random 64-atom Li32Si32 cell at 1.5 g/cm^3, FIRE-relaxed (50 steps), then NVT at
2000 K through ``synthpre.lammps_system.LammpsSystem`` exactly as ``synthpre md`` drives it;
time per step over ``--steps`` steps after 2 warm-up steps; the process's CPU time beside
wall time (robust to other load on a shared machine). Labelling: ``--frames`` such cells
(different seeds, ``--label-atoms`` atoms each), one calculator call per frame vs
``label_batch``; CPU time, best of ``--repeats``.
Run with OMP_NUM_THREADS=1 (torch then uses one thread).

    OMP_NUM_THREADS=1 python benchmarks/bench_foundation.py [--teachers sevennet-0 chgnet-0.3]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from synthpre.cells import random_cell
from synthpre.foundation import label_batch
from synthpre.lammps_system import LammpsSystem
from synthpre.teachers import get_teacher

COMPOSITION = {"Li": 32, "Si": 32}
DENSITY = 1.5  # g/cm^3, a-LiSi is ~1.4-1.6


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def md_step_time(name: str, steps: int) -> dict:
    teacher = get_teacher(name)
    system = LammpsSystem(random_cell(COMPOSITION, DENSITY, 1.5, seed=1), teacher)
    lmp = system.lmp
    lmp.commands_list(["min_style fire", "minimize 0.0 1.0 50 1000", "reset_timestep 0",
                       "timestep 0.001", "velocity all create 2000 7 mom yes rot no",
                       "fix nvt all nvt temp 2000 2000 0.1", "run 2"])
    wall, cpu = clocks()
    lmp.command(f"run {steps}")
    wall, cpu = (b - a for a, b in zip((wall, cpu), clocks()))
    failed = system.callback_error
    system.close()
    if failed:
        raise RuntimeError(failed)
    return {"ms_per_step": 1000 * wall / steps, "cpu_ms_per_step": 1000 * cpu / steps,
            "atom_steps_per_s": 64 * steps / wall}


def labelling(name: str, n_frames: int, repeats: int, batch_size: int, n_atoms: int) -> dict:
    teacher = get_teacher(name)
    calc = teacher.make_calculator()
    half = {"Li": n_atoms // 2, "Si": n_atoms - n_atoms // 2}
    frames = [random_cell(half, DENSITY, 1.5, seed=100 + i) for i in range(n_frames)]
    label_batch(calc, frames[:2], batch_size)  # warm-up

    def one_by_one():
        out = []
        for atoms in frames:
            probe = atoms.copy()
            probe.calc = calc
            out.append((probe.get_potential_energy(), probe.get_forces()))
        return out

    best = {}
    results = {}
    for _ in range(repeats):
        for key, fn in (("single", one_by_one),
                        ("batched", lambda: label_batch(calc, frames, batch_size))):
            start = time.process_time()  # CPU time: robust to other load here
            results[key] = fn()
            best[key] = min(best.get(key, np.inf), time.process_time() - start)
    single_e = np.array([e for e, _ in results["single"]])
    batched_e = np.array(results["batched"][0])
    f_single = np.concatenate([f for _, f in results["single"]])
    f_batched = np.concatenate(results["batched"][1])
    return {"single_frames_per_s": n_frames / best["single"],
            "batched_frames_per_s": n_frames / best["batched"],
            "max_dE_eV": float(np.abs(single_e - batched_e).max()),
            "max_dF_eV_A": float(np.abs(f_single - f_batched).max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", nargs="+", default=["sevennet-0", "chgnet-0.3"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--label-atoms", type=int, nargs="+", default=[16, 64])
    p.add_argument("--skip-md", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if not args.skip_md:
        print("| teacher | MD ms/step (wall) | MD ms/step (CPU) | atom-steps/s (wall) |")
        print("|---|---|---|---|")
        for name in args.teachers:
            md = md_step_time(name, args.steps)
            print(f"| {name} | {md['ms_per_step']:.0f} | {md['cpu_ms_per_step']:.0f} | "
                  f"{md['atom_steps_per_s']:.0f} |", flush=True)
    print(f"\n| teacher | atoms/frame | frames/s one by one | frames/s batched "
          f"({args.batch_size}) | batched / single | max dE, dF batched vs single |")
    print("|---|---|---|---|---|---|")
    for name in args.teachers:
        for n_atoms in args.label_atoms:
            lab = labelling(name, args.frames, args.repeats, args.batch_size, n_atoms)
            print(f"| {name} | {n_atoms} | {lab['single_frames_per_s']:.2f} | "
                  f"{lab['batched_frames_per_s']:.2f} | "
                  f"{lab['batched_frames_per_s'] / lab['single_frames_per_s']:.2f} | "
                  f"{lab['max_dE_eV']:.1e} eV, {lab['max_dF_eV_A']:.1e} eV/Å |", flush=True)


if __name__ == "__main__":
    main()
