"""MD speed of an exported model (metatomic-ase) vs synthpre's own ASE calculator, one run.

The paper's model size (C, r_max 4, 4 layers, 32 features, l_max 1, parity, 8 Bessel
functions, radial MLP 1 x 8, float32), random weights (speed does not depend on them) with
small forces; rattled diamond cells (64 and 216 atoms). NVE velocity Verlet, 0.5 fs, 1 thread;
every timed run starts from the same cell; steps/s after 3 warm-up steps, best of
``--repeats`` interleaved rounds, also per second of process CPU time (robust to other jobs on a shared
machine). Three calculators on the same cells:

- ``synthpre fast``: ``SynthpreCalculator`` with its default (training) kernel;
- ``synthpre reference``: the same with the e3nn ``reference`` kernel;
- ``metatomic-ase``: the exported file through ``MetatomicCalculator`` (TorchScript, the fast
  kernel's arithmetic as plain ops).

    .venv/bin/python benchmarks/bench_export.py [--steps 10] [--append docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_md import replace_section  # noqa: E402

PAPER = {"species": ["C"], "r_max": 4.0, "num_layers": 4, "num_features": 32, "l_max": 1,
         "parity": True, "num_basis": 8, "radial_mlp_width": 8, "radial_mlp_depth": 1,
         "avg_num_neighbors": 30.0, "dtype": "float32", "kernel": "fast",
         "compile": False}
HEADING = "## Exported model (metatomic) vs SynthpreCalculator in MD"


def make_files(folder: Path) -> tuple[Path, Path]:
    from synthpre.export import export_model
    from synthpre.model import NequIP
    from synthpre.modelfile import save_model

    torch.manual_seed(0)
    model = NequIP.from_config(PAPER)
    with torch.no_grad():
        model.scale.fill_(0.1)  # gentle random forces: the cells survive the timed steps
    save_model(folder / "model.pt", model, {"e0": {"C": -1.0}})
    export_model(folder / "model.pt", folder / "exported.pt")
    return folder / "model.pt", folder / "exported.pt"


def calculators(model_path: Path, exported: Path) -> dict:
    from metatomic_ase import MetatomicCalculator

    from synthpre.calculator import SynthpreCalculator
    from synthpre.modelfile import load_model

    reference = SynthpreCalculator(model_path)
    reference.model = load_model(model_path, kernel="reference")[0]
    return {"synthpre fast": SynthpreCalculator(model_path), "synthpre reference": reference,
            "metatomic-ase": MetatomicCalculator(str(exported), device="cpu")}


def cell(n_rep: int):
    atoms = bulk("C", "diamond", 3.567, cubic=True).repeat(n_rep)
    atoms.rattle(0.05, seed=n_rep)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(n_rep))
    return atoms


def time_md(atoms, calc, steps: int, warmup: int = 3) -> tuple[float, float, float]:
    """(steps/s wall, steps/s CPU time, final total energy in eV)."""
    atoms = atoms.copy()
    atoms.calc = calc
    md = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    md.run(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    md.run(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return steps / wall, steps / cpu, atoms.get_total_energy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3],
                        help="diamond cubic cells repeated n x n x n (8 n^3 atoms)")
    parser.add_argument("--append", help="markdown file: replace its section of this benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp))
        rows = []
        for n in args.sizes:
            # fresh calculators per cell size, as in a simulation: the exported model loaded
            # once and run on 64 atoms first ran 216 atoms ~1.7x slower than a fresh one
            # (TorchScript's executor optimises for the shapes it sees first, presumably)
            calcs = calculators(*files)
            atoms = cell(n)
            best = {name: (0.0, 0.0) for name in calcs}
            energies = {}
            for _ in range(args.repeats):  # interleaved: load drifts hit all alike
                for name, calc in calcs.items():
                    wall, cpu, energies[name] = time_md(atoms, calc, args.steps)
                    best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
            drift = max(energies.values()) - min(energies.values())
            rows.append((len(atoms), best, drift))
            print(len(atoms), {k: f"{w:.2f}/{c:.2f}" for k, (w, c) in best.items()},
                  f"end-energy spread {drift:.1e} eV", flush=True)
    names = list(calcs)
    table = ["| atoms | " + " | ".join(f"{k} steps/s (CPU)" for k in names)
             + " | metatomic / synthpre fast (CPU) | end energy spread |",
             "|---" * (len(names) + 3) + "|"]
    for n_atoms, best, drift in rows:
        ratio = best["metatomic-ase"][1] / best["synthpre fast"][1]
        table.append(f"| {n_atoms} | " + " | ".join(f"{w:.2f} ({c:.2f})" for w, c in
                                                   (best[k] for k in names))
                     + f" | {ratio:.2f} | {drift:.1e} eV |")
    print("\n".join(table))
    if args.append:
        section = (f"{HEADING}\n\n`python benchmarks/bench_export.py --steps {args.steps} "
                   f"--repeats {args.repeats} --append docs/benchmarks.md` "
                   f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
                   f"1 thread, torch {torch.__version__}): see the script's docstring for the "
                   "set-up.\n\n" + "\n".join(table) + "\n")
        replace_section(Path(args.append), HEADING, section)


if __name__ == "__main__":
    main()
