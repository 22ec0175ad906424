"""Stability driver throughput with a paper-size model (4 layers, 32 features): atom-steps per
second of CPU time through LAMMPS + ``fix external`` (``synthpre.stability.run.run_md``), and how
much of a step is the model (``SynthpreCalculator`` called directly on the same cell) and how
much the fix-external round trip (the rest). CPU time, 1 thread: robust to a shared machine.

The comparison with NequIP 0.19.1's own ASE calculator under ASE Langevin, side by side with
this driver, is ``bench_inference.py --md-steps N`` (it needs the NequIP venv of
``bench_train.py``).

    OMP_NUM_THREADS=1 python benchmarks/bench_stability.py [--atoms 64 216] [--steps 200]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthpre.calculator import SynthpreCalculator
from synthpre.cells import random_cell
from synthpre.model import NequIP
from synthpre.modelfile import save_model
from synthpre.stability.run import run_md
from synthpre.stability.settings import FailureCriteria, StabilityProtocol
from synthpre.stability.job import model_potential

HYPER = {"r_max": 4.0, "num_layers": 4, "num_features": 32, "l_max": 1, "parity": True,
         "num_basis": 8, "radial_mlp_width": 8, "radial_mlp_depth": 1, "dtype": "float32",
         "species": ["C"], "avg_num_neighbors": 10.0, "kernel": "fast", "compile": False}
LAX = FailureCriteria(check_every_fs=10, min_distance=0.0, max_force=1e12,
                      max_temperature_factor=1e6, close_pair_factor=0.0, unphysical_factor=2.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--atoms", type=int, nargs="+", default=[64, 216])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        model = NequIP.from_config(HYPER)
        save_model(path, model, {"e0": {"C": 0.0}})
        n_params = sum(p.numel() for p in model.parameters())
        potential, _ = model_potential(str(path), compile=False, engine="fix_external")
        calc = SynthpreCalculator(path)
        print(f"model: {n_params} parameters; {args.steps} steps, 1 fs, 300 K, CPU time")
        print("| atoms | driver atom-steps/s | model alone atom-steps/s | model share of a step |")
        print("|---|---|---|---|")
        for n in args.atoms:
            cell = random_cell({"C": n}, 2.0, 1.3, seed=0)
            proto = StabilityProtocol(300, 300, 0, args.steps / 1000.0, 0, 1.0, 100, 1.0)
            c0 = time.process_time()
            result = run_md(potential, cell, proto, LAX, 1, "bench", 0)
            driver = time.process_time() - c0
            assert result.failure is None, result.failure
            rng = np.random.default_rng(0)
            c0 = time.process_time()
            for _ in range(args.steps + 1):  # the driver also evaluates t = 0
                probe = cell.copy()
                probe.positions += rng.normal(0, 0.01, probe.positions.shape)
                probe.calc = calc
                probe.get_forces()
            alone = time.process_time() - c0
            print(f"| {n} | {n * args.steps / driver:,.0f} | {n * args.steps / alone:,.0f} | "
                  f"{alone / driver:.0%} |")


if __name__ == "__main__":
    main()
