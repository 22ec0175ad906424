"""MD speed of one model three ways: LAMMPS + the metatomic plugin, the stability stage's
``fix external`` (LAMMPS calling SynthpreCalculator each step), and metatomic-ase.

The paper's model size (as ``bench_export.py``: C, r_max 4, 4 layers, 32 features, l_max 1,
float32, random weights with small forces); rattled diamond cells (64 and 216 atoms) at 300 K;
NVE, 0.5 fs, one thread (torch and LAMMPS), all in this one process so CPU time compares.
Each engine: 3 warm-up steps, then ``--steps`` timed; best of ``--repeats`` interleaved
rounds. Reported: MD atom-steps per second of process CPU time (and per wall second), and the
spread of the final total energies (the same start and dynamics: a check that all three run
the same model).

    .venv/bin/python benchmarks/bench_plugin.py [--steps 20] [--append docs/benchmarks.md]
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
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import cell, make_files  # noqa: E402
from bench_md import replace_section  # noqa: E402

HEADING = "## LAMMPS plugin vs fix external vs metatomic-ase (MD of one model)"


def lammps_engine(potential, atoms):
    """A function running n NVE steps of ``atoms`` in LAMMPS with ``potential``."""
    from synthpre.lammps_system import LammpsSystem

    system = LammpsSystem(atoms, potential)
    v = system.prism.vector_to_lammps(atoms.get_velocities()) * 1000 * units.fs  # Å/ps
    from ctypes import c_double
    system.lmp.scatter_atoms("v", 1, 3, (len(v) * 3 * c_double)(*v.ravel()))
    system.lmp.commands_list(["timestep 0.0005", "fix nve all nve",
                              "thermo_style custom step pe ke etotal"])
    first = [True]

    def run(n):
        system.lmp.command(f"run {n} pre {'yes' if first[0] else 'no'} post no")
        first[0] = False
        return float(system.lmp.get_thermo("etotal"))
    return run, system.close


def ase_engine(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    md = VelocityVerlet(atoms, timestep=0.5 * units.fs)

    def run(n):
        md.run(n)
        return atoms.get_total_energy()
    return run, lambda: None


def measure(make, steps: int) -> tuple[float, float, float]:
    """(steps/s CPU, steps/s wall, final total energy) of a fresh engine."""
    run, close = make()
    try:
        run(3)
        wall, cpu = time.perf_counter(), time.process_time()
        energy = run(steps)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        close()
    return steps / cpu, steps / wall, energy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3],
                        help="diamond cubic cells repeated n x n x n (8 n^3 atoms)")
    parser.add_argument("--append", help="markdown file: replace its section of this benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from metatomic_ase import MetatomicCalculator

    from synthpre.lammps_plugin import plugin_potential
    from synthpre.stability.job import model_potential

    with tempfile.TemporaryDirectory() as tmp:
        model, exported = make_files(Path(tmp))
        plugin = plugin_potential(model, tmp)
        external = model_potential(str(model), False, "fix_external")[0]
        rows = []
        for n in args.sizes:
            atoms = cell(n)
            engines = {
                "LAMMPS + plugin": lambda: lammps_engine(plugin, atoms),
                "fix external": lambda: lammps_engine(external, atoms),
                "metatomic-ase": lambda: ase_engine(
                    MetatomicCalculator(str(exported), device="cpu"), atoms),
            }
            best = {name: (0.0, 0.0) for name in engines}
            energies = {}
            for _ in range(args.repeats):  # interleaved: load drifts hit all alike
                for name, make in engines.items():
                    cpu, wall, energies[name] = measure(make, args.steps)
                    best[name] = (max(best[name][0], cpu), max(best[name][1], wall))
            spread = max(energies.values()) - min(energies.values())
            rows.append((len(atoms), best, spread))
            print(len(atoms), {k: f"{c * len(atoms):.0f}/{w * len(atoms):.0f}"
                               for k, (c, w) in best.items()}, f"spread {spread:.1e} eV",
                  flush=True)
    names = list(best)
    table = ["| atoms | " + " | ".join(f"{k}: atom-steps/CPU s (/wall s)" for k in names)
             + " | plugin / fix external (CPU) | plugin / metatomic-ase (CPU) "
               "| final energy spread |", "|---" * (len(names) + 4) + "|"]
    for n_atoms, best, spread in rows:
        r1 = best["LAMMPS + plugin"][0] / best["fix external"][0]
        r2 = best["LAMMPS + plugin"][0] / best["metatomic-ase"][0]
        table.append(f"| {n_atoms} | " + " | ".join(
            f"{c * n_atoms:.0f} ({w * n_atoms:.0f})" for c, w in (best[k] for k in names))
            + f" | {r1:.2f} | {r2:.2f} | {spread:.1e} eV |")
    print("\n".join(table))
    if args.append:
        section = (f"{HEADING}\n\n`python benchmarks/bench_plugin.py --steps {args.steps} "
                   f"--repeats {args.repeats} --append docs/benchmarks.md` "
                   f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
                   f"2 cores shared with other jobs, 1 thread, torch {torch.__version__}): see "
                   "the script's docstring for the set-up.\n\n" + "\n".join(table) + "\n")
        replace_section(Path(args.append), HEADING, section)


if __name__ == "__main__":
    main()
