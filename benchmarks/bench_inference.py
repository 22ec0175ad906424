"""Inference for MD: energy + forces of one 64- and one 216-atom carbon cell through ASE
calculators, synthpre's ``SynthpreCalculator`` vs NequIP 0.19.1's ``NequIPCalculator``.

Codes (``--codes``): ``synthpre`` (fast kernel through torch.compile, ``model.compile``
true), ``synthpre-eager`` (the same kernel eagerly), ``nequip-eager`` (NequIP's
``GraphModel``), ``nequip-compile`` (built with ``compile_mode="compile"``; NequIP runs a
one-structure batch through its eager model anyway: ``CompileGraphModel.forward`` falls back
to eager when a batch dimension is 1, so this is a check of that path, not a faster one)
and ``nequip-torchscript`` (what ``nequip-compile --mode torchscript`` writes: NequIP's
``prepare_model_for_compile``, e3nn's ``script``, ``torch.jit.freeze``; its recommended
``aotinductor`` mode was not run, see docs/benchmarks.md).

Same architecture as ``bench_train.py`` (paper size, float32, random weights, seed 0), the
same cells (rattled diamond at 3.567 Å, 2x2x2 and 3x3x3 conventional cells), one thread.
Each calculator gets ``--warmup`` untimed calls (the first compiles, for compiled codes:
reported as ``first_call_s``), then ``--calls`` timed calls on positions jittered by 0.01 Å
per call (as MD moves them; the same sequence for every code), each computing energy and
forces from scratch (neighbour list included). Reports calls/s per wall second and per
second of the process's CPU time, and the energy of the first cell (same weights are not
shared between the codes: energies are not comparable, they only show a finite result).

With ``--md-steps N`` each code instead runs N steps of MD under ASE's Langevin integrator
(1 fs, 300 K, friction 0.01 /fs; NequIP's recommended ASE route), and synthpre also runs the
same N steps through its stability driver (LAMMPS ``fix external``, ``synthpre.stability.run``;
``driver`` entries): atom-steps per CPU second, after one untimed first call.

    .venv/bin/python benchmarks/bench_inference.py --calls 50 --repeats 2
    .venv/bin/python benchmarks/bench_inference.py --md-steps 100 --repeats 2 \
        --codes synthpre synthpre-eager nequip-eager
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_train import HYPER, machine, median  # noqa: E402

CODES = ("synthpre", "synthpre-eager", "nequip-eager", "nequip-compile", "nequip-torchscript")


def cell(n_rep: int):
    from ase.build import bulk
    atoms = bulk("C", "diamond", a=3.567, cubic=True).repeat(n_rep)
    atoms.rattle(0.05, seed=0)
    return atoms


def average_neighbours(atoms, r_max: float) -> float:
    from vesin import NeighborList
    i, = NeighborList(cutoff=r_max, full_list=True).compute(
        atoms.positions, atoms.cell.array, True, quantities="i")
    return len(i) / len(atoms)


def time_calls(calc, atoms, args) -> dict:
    import numpy as np
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    energy = float(atoms.get_potential_energy())
    first = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
        atoms.get_forces()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.calls):
        atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
        forces = atoms.get_forces()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert np.isfinite(forces).all() and np.isfinite(energy)
    return {"atoms": len(atoms), "first_call_s": first, "calls_per_s": args.calls / wall,
            "calls_per_cpu_s": args.calls / cpu, "ms_per_call": 1e3 * wall / args.calls,
            "energy_eV": energy}


def time_md(calc, atoms, args) -> dict:
    """``args.md_steps`` ASE Langevin steps (the first force call untimed: it compiles)."""
    import numpy as np
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   rng=np.random.default_rng(2))
    t0 = time.perf_counter()
    atoms.get_forces()
    first = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    dyn.run(args.md_steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert np.isfinite(atoms.get_forces()).all()
    steps = len(atoms) * args.md_steps
    return {"atoms": len(atoms), "first_call_s": first, "atom_steps_per_s": steps / wall,
            "atom_steps_per_cpu_s": steps / cpu}


def time_driver(path, compile: bool, atoms, args) -> dict:
    """The same steps through synthpre's stability driver (LAMMPS + fix external)."""
    from synthpre.stability.job import model_potential
    from synthpre.stability.run import run_md
    from synthpre.stability.settings import FailureCriteria, StabilityProtocol
    potential, _ = model_potential(str(path), compile, "fix_external")
    protocol = StabilityProtocol(300, 300, 0, args.md_steps / 1000.0, 0, 1.0, 100, 1.0)
    lax = FailureCriteria(check_every_fs=10, min_distance=0.0, max_force=1e12,
                          max_temperature_factor=1e6, close_pair_factor=0.0,
                          unphysical_factor=2.0)
    run_md(potential, atoms, protocol, lax, 1, "warm-up", 0)  # compiles, as time_md's first call
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_md(potential, atoms, protocol, lax, 1, "bench", 0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.failure is None, result.failure
    steps = len(atoms) * args.md_steps
    return {"atom_steps_per_s": steps / wall, "atom_steps_per_cpu_s": steps / cpu}


def run_synthpre(args, cells) -> list[dict]:
    import torch
    sys.path.insert(0, str(ROOT.parent / "src"))
    from synthpre.calculator import SynthpreCalculator
    from synthpre.model import NequIP
    from synthpre.modelfile import save_model
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = NequIP.from_config({**HYPER, "species": ["C"], "avg_num_neighbors": args.avg_nn,
                                "compile": args.worker == "synthpre"})
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        save_model(path, model, {"e0": {"C": 0.0}})
        for atoms in cells:  # a fresh calculator per size, as MD would
            calc = SynthpreCalculator(path, device=args.device)
            if not args.md_steps:
                out.append(time_calls(calc, atoms, args))
                continue
            driver = time_driver(path, args.worker == "synthpre", atoms, args)
            out.append({**time_md(calc, atoms, args),
                        **{f"driver_{k}": v for k, v in driver.items()}})
    return out


def run_nequip(args, cells) -> list[dict]:
    import torch
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state
    set_global_state()
    torch.set_num_threads(args.threads)
    mode = "compile" if args.worker == "nequip-compile" else "eager"
    model = NequIPGNNModel(
        seed=args.seed, model_dtype=HYPER["dtype"], r_max=HYPER["r_max"], type_names=["C"],
        compile_mode=mode, num_layers=HYPER["num_layers"], l_max=HYPER["l_max"],
        parity=HYPER["parity"], num_features=HYPER["num_features"],
        radial_mlp_depth=HYPER["radial_mlp_depth"], radial_mlp_width=HYPER["radial_mlp_width"],
        num_bessels=HYPER["num_basis"], bessel_trainable=True, polynomial_cutoff_p=6,
        avg_num_neighbors=args.avg_nn, readout_mlp_hidden_layers_depth=1,
        readout_mlp_hidden_layers_width=16, readout_mlp_nonlinearity=None,
        per_type_energy_scales=1.0, per_type_energy_shifts=0.0).eval()
    if args.worker == "nequip-torchscript":
        from e3nn.util.jit import script
        from nequip.utils.compile import prepare_model_for_compile
        frozen = torch.jit.freeze(script(prepare_model_for_compile(model, args.device)).eval())

        class Frozen(torch.nn.Module):  # NequIPCalculator asks .training, which freezing drops
            def forward(self, data):
                return frozen(data)
        model = Frozen().eval()
    transforms = [ChemicalSpeciesToAtomTypeMapper(model_type_names=["C"],
                                                  chemical_species_to_atom_type_map={"C": "C"}),
                  NeighborListTransform(r_max=HYPER["r_max"])]
    timer = time_md if args.md_steps else time_calls
    return [timer(NequIPCalculator(model, device=args.device, transforms=transforms), atoms, args)
            for atoms in cells]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codes", nargs="+", choices=CODES, default=list(CODES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[2, 3],
                    help="conventional diamond cells per side: 2 -> 64 atoms, 3 -> 216")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--md-steps", type=int, default=0,
                    help="time this many Langevin MD steps instead of single calls")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nequip-python", default="/tmp/nequip-venv/bin/python")
    ap.add_argument("--synthpre-python", default=sys.executable)
    ap.add_argument("--worker", choices=CODES)
    ap.add_argument("--avg-nn", type=float)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    cells = [cell(n) for n in args.sizes]
    if args.worker:
        run = run_synthpre if args.worker.startswith("synthpre") else run_nequip
        print("RESULT " + json.dumps(run(args, cells)))
        return

    avg_nn = average_neighbours(cells[0], HYPER["r_max"])
    common = ["--sizes", *map(str, args.sizes), "--calls", str(args.calls), "--warmup",
              str(args.warmup), "--threads", str(args.threads), "--device", args.device,
              "--seed", str(args.seed), "--avg-nn", repr(avg_nn), "--md-steps", str(args.md_steps)]
    runs: dict[str, list[list[dict]]] = {code: [] for code in args.codes}
    for _ in range(args.repeats):
        for code in args.codes:
            python = args.nequip_python if code.startswith("nequip") else args.synthpre_python
            proc = subprocess.run([python, __file__, "--worker", code, *common],
                                  capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(code, proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                continue
            runs[code].append(json.loads(lines[-1][len("RESULT "):]))
            print(code, json.dumps(runs[code][-1]), flush=True)
    rate = "atom_steps_per_cpu_s" if args.md_steps else "calls_per_cpu_s"
    table = {code: [{key: median([r[k][key] for r in rs]) if key != "atoms" else rs[0][k][key]
                     for key in rs[0][k] if key != "energy_eV"}
                    for k in range(len(args.sizes))] for code, rs in runs.items() if rs}
    summary = {"machine": machine(), "device": args.device, "threads": args.threads,
               "calls": args.calls, "repeats": args.repeats, "avg_num_neighbors": avg_nn,
               "medians": table, "runs": runs}
    if "synthpre" in table:
        summary["cpu_ratio_synthpre_over"] = {
            code: [a[rate] / b[rate] for a, b in zip(table["synthpre"], rows)]
            for code, rows in table.items() if code != "synthpre"}
        if args.md_steps:  # the stability driver against each code's ASE Langevin
            summary["cpu_ratio_synthpre_driver_over"] = {
                code: [a[f"driver_{rate}"] / b[rate] for a, b in zip(table["synthpre"], rows)]
                for code, rows in table.items()}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
