"""Training speed: synthpre's NequIP-style model vs NequIP 0.19.1, side by side.

Codes (``--codes``): ``synthpre`` (the fast kernel through torch.compile, ``model.compile``
true, the CPU default), ``synthpre-eager`` (the same kernel eagerly), ``synthpre-capture``
(``train.capture: true``, the GPU default: forward, forces and loss traced into one graph and
compiled, fused Adam; ``synthpre.capture``), ``synthpre-capture-bmm`` (the same with the
kernel's batched matmuls traced instead of its broadcast forms), ``synthpre-cueq`` and
``synthpre-cueq-capture`` (``model.kernel: cueq``; ``synthpre-reference``: e3nn's TensorProduct, op by op or captured: cuequivariance's CUDA
kernels where ``cuequivariance-ops-torch-cu12`` is installed, else its PyTorch fallback), ``nequip-eager``
and ``nequip-compile`` (NequIP's ``compile_mode="compile"``: its train-time
``make_fx`` + ``torch.compile`` path). All train on the same SNAP-labelled 64-atom carbon
frames, with the same hyperparameters (r_max 4, 4 layers, 32 features, l_max 1, parity, 8
trainable Bessel functions, polynomial cutoff p=6, radial MLP 1 x 8, readout 32 -> 16 -> 1,
per-species scale 1 / shift 0, float32), the same loss (force MSE + 4 x per-atom energy
MSE), Adam (lr 5e-3), batch 10, the same shuffles.

Two measurements:

Every throughput run also counts the ops one step dispatches (``dispatched_ops``).
``--data synthetic`` (the default without the demo's labels) trains on random paper-size
carbon cells. ``benchmarks/gpu.sh`` runs it on a GPU in one command.

* throughput (default): one untimed warm-up step (which compiles, for compiled codes: its
  time is reported as ``warmup_s``), then ``--epochs`` timed epochs; structures/s per
  wall-clock second and per second of the process's CPU time (other jobs on a shared
  machine disturb the latter much less), peak memory and validation E/F RMSE after them.
* time to accuracy (``--target-force-rmse X``): from the same initial state, train until the
  validation force RMSE (checked every ``--eval-every`` steps, not counted in the training
  time) is <= X eV/Å, or ``--max-steps``; reports steps, training wall and CPU time (first
  step included and also given separately) and the final errors. Compilation happens mostly
  in the first validation (the first model call), reported as ``first_eval_s``, not in the
  training time.

Each code runs in its own process (its own virtual environment: NequIP pins its own stack
and sets a global default dtype), one after the other; ``--repeats R`` runs the list R
times round-robin so that load changes on a shared machine hit every code alike, and the
summary gives each code's median and the ratios of the medians.

    .venv/bin/python benchmarks/bench_train.py --epochs 3 --threads 1 \
        --nequip-python /tmp/nequip-venv/bin/python
    .venv/bin/python benchmarks/bench_train.py --target-force-rmse 1.0 --max-steps 400

The NequIP environment: ``python3 -m venv /tmp/nequip-venv``, then
``pip install torch==2.13.0`` first (else pip pulls a CUDA build), then ``pip install
nequip==0.19.1``. Data: ``results/demo/labels/snap_c/*.extxyz`` (the demo pipeline's labels,
4 trajectories x 25 frames); the last trajectory is the validation set (split by trajectory).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HYPER = {"r_max": 4.0, "num_layers": 4, "num_features": 32, "l_max": 1, "parity": True,
         "num_basis": 8, "radial_mlp_width": 8, "radial_mlp_depth": 1, "dtype": "float32",
         "kernel": "fast"}
LR, ENERGY_WEIGHT, BATCH = 5e-3, 4.0, 10


def synthetic_frames(n_traj: int = 4, per_traj: int = 25, n_atoms: int = 64, seed: int = 0):
    """Random 64-atom carbon cells at 2.5 g/cm^3 (atoms >= 1.2 Å apart) with random labels:
    the paper's size and about its neighbour count (~33 within 4 Å), for speed and op counts
    where no labelled frames are at hand (a fresh checkout, a GPU node). Same seed, same
    frames, in every worker process."""
    import numpy as np
    from ase import Atoms
    rng = np.random.default_rng(seed)
    side = (n_atoms * 12.011 * 1.66054 / 2.5) ** (1 / 3)
    trajectories = []
    for _ in range(n_traj):
        frames = []
        for _ in range(per_traj):
            pos = np.empty((0, 3))
            while len(pos) < n_atoms:
                p = rng.random(3) * side
                d = pos - p
                d -= side * np.round(d / side)
                if not len(pos) or np.min(np.linalg.norm(d, axis=1)) >= 1.2:
                    pos = np.vstack([pos, p])
            atoms = Atoms(f"C{n_atoms}", positions=pos, cell=np.eye(3) * side, pbc=True)
            frames.append((atoms, float(rng.normal(-7 * n_atoms, 1.0)),
                           rng.normal(0, 1.0, (n_atoms, 3))))
        trajectories.append(frames)
    return trajectories


def load_frames(paths: list[str]):
    """(train, val) lists of (atoms, energy, forces); the last file is validation.
    ``["synthetic"]``: ``synthetic_frames`` (4 trajectories of 25, the last for validation)."""
    import ase.io
    import numpy as np
    if paths == ["synthetic"]:
        out = synthetic_frames()
        return [f for fs in out[:-1] for f in fs], out[-1]
    out = []
    for p in paths:
        frames = []
        for a in ase.io.read(p, index=":", format="extxyz"):
            energy = float(a.calc.results["energy"]) if a.calc else float(a.info["energy"])
            forces = np.asarray(a.calc.results["forces"] if a.calc else a.arrays["forces"])
            a.calc = None
            frames.append((a, energy, forces))
        out.append(frames)
    return [f for fs in out[:-1] for f in fs], out[-1]


def epoch_order(n: int, seed: int, epoch: int):
    import numpy as np
    return np.random.default_rng([seed, epoch]).permutation(n)


def peak_memory(device) -> dict:
    mem = {"peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        import torch
        mem["peak_cuda_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return mem


def rmse(pred_e, pred_f, data):
    import numpy as np
    de = np.array([(e - ref) / len(a) for e, (a, ref, _) in zip(pred_e, data)])
    df = np.concatenate([(f - ref).ravel() for f, (_, _, ref) in zip(pred_f, data)])
    return float(np.sqrt(np.mean(de**2))), float(np.sqrt(np.mean(df**2)))


def timed_epochs(step, train_items, args, device) -> dict:
    """One untimed warm-up step (allocator, lazy init), then the timed epochs: the same
    batches in the same order for both codes."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step(train_items[:BATCH])
    sync()
    warmup = time.perf_counter() - t0
    t0, c0, steps, cpu_steps = time.perf_counter(), time.process_time(), [], []
    for epoch in range(1, args.epochs + 1):
        order = epoch_order(len(train_items), args.seed, epoch)
        for k in range(0, len(order), BATCH):
            ts, cs = time.perf_counter(), time.process_time()
            step([train_items[i] for i in order[k:k + BATCH]])
            steps.append(time.perf_counter() - ts)
            cpu_steps.append(time.process_time() - cs)
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(train_items) * args.epochs
    return {"warmup_s": warmup, "structures_per_s": n / wall, "train_wall_s": wall,
            "median_step_s": sorted(steps)[len(steps) // 2],
            "structures_per_cpu_s": n / cpu, "train_cpu_s": cpu,
            "median_step_cpu_s": sorted(cpu_steps)[len(cpu_steps) // 2]}


def dispatched_ops(step, items, device) -> dict:
    """What one training step dispatches, counted by torch.profiler around it (after the
    timed epochs: compiled codes are warm): every aten op, the leaves among them (ops that
    call no other aten op: what actually runs), and the leaves outside compiled graphs (the
    per-op dispatches a compiled graph does not absorb; inside one, Inductor's generated code
    runs and the profiler shows only its buffer allocations). On a GPU, also the kernels
    launched. Ops of a compiled region are those below an event named like "Torch-Compiled
    Region", "CompiledFunction" or "CompiledFxGraph"."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step(items)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()

    def in_compiled(e):
        while e is not None:
            if "Compiled" in e.name:
                return True
            e = e.cpu_parent
        return False

    aten = [e for e in events if e.name.startswith("aten::")]
    leaves = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    out = {"aten_ops": len(aten), "aten_leaves": len(leaves),
           "aten_leaves_outside_compiled": sum(not in_compiled(e) for e in leaves),
           "compiled_region_calls": sum(e.name.startswith(("Torch-Compiled Region",
                                                           "CompiledFunction"))
                                        for e in events)}
    if device.type == "cuda":
        out["cuda_kernels"] = sum(e.device_type == torch.autograd.DeviceType.CUDA
                                  for e in events)
    return out


def time_to_accuracy(step, validate, train_items, args, device) -> dict:
    """Train from the initial state until validate() (E, F RMSE) reaches the force target,
    or max_steps; evaluations are excluded from the training time."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    wall = cpu = 0.0
    first_step_s, n_steps, curve, epoch = None, 0, [], 0
    t0 = time.perf_counter()
    errors = validate()  # the first model call: compiled codes compile here (forward part)
    first_eval_s = time.perf_counter() - t0
    curve.append((0, *errors))
    while errors[1] > args.target_force_rmse and n_steps < args.max_steps:
        epoch += 1
        order = epoch_order(len(train_items), args.seed, epoch)
        for k in range(0, len(order), BATCH):
            ts, cs = time.perf_counter(), time.process_time()
            step([train_items[i] for i in order[k:k + BATCH]])
            sync()
            wall += time.perf_counter() - ts
            cpu += time.process_time() - cs
            first_step_s = wall if first_step_s is None else first_step_s
            n_steps += 1
            if n_steps % args.eval_every == 0 or n_steps == args.max_steps:
                errors = validate()
                curve.append((n_steps, *errors))
                if errors[1] <= args.target_force_rmse or n_steps == args.max_steps:
                    break
    return {"target_force_rmse": args.target_force_rmse, "reached": errors[1] <=
            args.target_force_rmse, "steps": n_steps, "train_wall_s": wall,
            "train_cpu_s": cpu, "first_step_s": first_step_s, "first_eval_s": first_eval_s,
            "wall_after_first_step_s": wall - (first_step_s or 0.0),
            "val_energy_rmse_meV_per_atom": 1e3 * errors[0], "val_force_rmse_eV_per_A": errors[1],
            "curve_steps_E_F": curve, **peak_memory(device)}


def result(code, n_parameters, timing, graph_time, pred_e, pred_f, val, device) -> dict:
    e_rmse, f_rmse = rmse(pred_e, pred_f, val)
    return {"code": code, "n_parameters": n_parameters, **timing, "graph_build_s": graph_time,
            "val_energy_rmse_meV_per_atom": 1e3 * e_rmse, "val_force_rmse_eV_per_A": f_rmse,
            **peak_memory(device)}


def measure(code, n_parameters, step, predict, tr, val, graph_time, args, device) -> dict:
    """The run ``args`` asks for (throughput or time to accuracy) of one code."""
    def validate():
        pe, pf = predict()
        return rmse(pe, pf, val)

    if args.target_force_rmse is not None:
        return {"code": code, "n_parameters": n_parameters, "graph_build_s": graph_time,
                **time_to_accuracy(step, validate, tr, args, device)}
    timing = timed_epochs(step, tr, args, device)
    ops = dispatched_ops(step, tr[:BATCH], device)
    return {**result(code, n_parameters, timing, graph_time, *predict(), val, device),
            "ops_per_step": ops}


def run_synthpre(args) -> dict:
    import torch
    sys.path.insert(0, str(ROOT / "src"))
    from synthpre.capture import CapturedStep
    from synthpre.graph import build_graph, concat
    from synthpre.model import NequIP, count_parameters
    from synthpre.trainer import adam, loss_fn
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, val = load_frames(args.data)
    rec = [{"numbers": a.numbers, "positions": a.positions, "cell": a.cell.array,
            "pbc": a.pbc, "energy": e, "forces": f} for a, e, f in train + val]
    torch.manual_seed(args.seed)
    cueq = args.worker.startswith("synthpre-cueq")  # model.kernel: cueq, op by op or captured
    kernel = "cueq" if cueq else "reference" if args.worker == "synthpre-reference" else "fast"
    model = NequIP.from_config({**HYPER, "species": ["C"], "avg_num_neighbors": args.avg_nn,
                                "kernel": kernel,
                                "compile": kernel == "fast" and args.worker != "synthpre-eager"})
    # the captured step (synthpre.capture); its validation runs the compiled bodies
    captured = CapturedStep(model) if args.worker.endswith(("capture", "capture-bmm")) else None
    if args.worker == "synthpre-capture-bmm":  # the kernel's batched matmuls traced
        import synthpre.kernel
        synthpre.kernel._Tracing.fused = False
    t0 = time.perf_counter()
    graphs = [build_graph(r, model.species, model.r_max, model.dtype) for r in rec]
    graph_time = time.perf_counter() - t0
    tr, va = graphs[:len(train)], graphs[len(train):]
    model.to(device).train()
    opt = adam(model, LR, fused=captured is not None)  # as synthpre.trainer.train

    def step(items):
        batch = concat(items).to(device)
        opt.zero_grad(set_to_none=True)
        if captured is not None:
            loss = captured(batch, ENERGY_WEIGHT)[0]
        else:
            loss = loss_fn(model(batch), batch, ENERGY_WEIGHT)
        loss.backward()
        opt.step()
        return loss.item()

    def predict():
        pe, pf = [], []
        for k in range(0, len(va), 20):
            out = model(concat(va[k:k + 20]).to(device))
            pe += out["energy"].detach().cpu().double().tolist()
            n = [g.positions.shape[0] for g in va[k:k + 20]]
            pf += [f.numpy() for f in torch.split(out["forces"].detach().cpu().double(), n)]
        return pe, pf

    return measure(args.worker, count_parameters(model), step, predict, tr, val, graph_time,
                   args, device)


def run_nequip(args) -> dict:
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state
    set_global_state()  # required before building a model (sets float64 default dtype)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, val = load_frames(args.data)
    model = NequIPGNNModel(
        seed=args.seed, model_dtype=HYPER["dtype"], r_max=HYPER["r_max"], type_names=["C"],
        compile_mode=args.worker.split("-")[1],  # eager | compile
        num_layers=HYPER["num_layers"], l_max=HYPER["l_max"], parity=HYPER["parity"],
        num_features=HYPER["num_features"], radial_mlp_depth=HYPER["radial_mlp_depth"],
        radial_mlp_width=HYPER["radial_mlp_width"], num_bessels=HYPER["num_basis"],
        bessel_trainable=True, polynomial_cutoff_p=6, avg_num_neighbors=args.avg_nn,
        readout_mlp_hidden_layers_depth=1, readout_mlp_hidden_layers_width=16,
        readout_mlp_nonlinearity=None,  # 32 -> 16 -> 1 linear, as NequIP 0.5.6 / synthpre
        per_type_energy_scales=1.0, per_type_energy_shifts=0.0).to(device)
    t0 = time.perf_counter()
    data = []
    for a, e, f in train + val:
        d = from_ase(a)
        d[AtomicDataDict.ATOM_TYPE_KEY] = torch.zeros(len(a), dtype=torch.long)
        d = compute_neighborlist_(d, HYPER["r_max"])
        d[AtomicDataDict.TOTAL_ENERGY_KEY] = torch.tensor([[e]], dtype=torch.float64)
        d[AtomicDataDict.FORCE_KEY] = torch.as_tensor(f, dtype=torch.float64)
        data.append(d)
    graph_time = time.perf_counter() - t0
    tr, va = data[:len(train)], data[len(train):]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def to_dev(b):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}

    def loss_of(out, b):
        n = b[AtomicDataDict.NUM_NODES_KEY].to(out[AtomicDataDict.TOTAL_ENERGY_KEY].dtype)
        ef = (out[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1)
              - b[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1).to(n.dtype)) / n
        ff = out[AtomicDataDict.FORCE_KEY] - b[AtomicDataDict.FORCE_KEY].to(n.dtype)
        return ff.pow(2).mean() + ENERGY_WEIGHT * ef.pow(2).mean()

    def step(items):
        b = to_dev(AtomicDataDict.batched_from_list(items))
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model(b), b)
        loss.backward()
        opt.step()
        return loss.item()

    def predict():
        pe, pf = [], []
        for k in range(0, len(va), 20):
            items = va[k:k + 20]
            out = model(to_dev(AtomicDataDict.batched_from_list(items)))
            pe += out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().cpu().double().view(-1).tolist()
            pf += [f.numpy() for f in torch.split(out[AtomicDataDict.FORCE_KEY].detach().cpu()
                                                  .double(), [len(d["pos"]) for d in items])]
        return pe, pf

    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return measure(f"nequip 0.19.1 ({args.worker.split('-')[1]})", n_params, step, predict,
                   tr, val, graph_time, args, device)


def average_neighbours(paths, r_max) -> float:
    from vesin import NeighborList
    train, _ = load_frames(paths)
    n_edges = n_atoms = 0
    for a, _, _ in train:
        i, = NeighborList(cutoff=r_max, full_list=True).compute(
            a.positions, a.cell.array, bool(a.pbc.all()), quantities="i")
        n_edges, n_atoms = n_edges + len(i), n_atoms + len(a)
    return n_edges / n_atoms


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


CODES = {"synthpre": run_synthpre, "synthpre-eager": run_synthpre,
         "synthpre-capture": run_synthpre, "synthpre-capture-bmm": run_synthpre,
         "synthpre-cueq": run_synthpre, "synthpre-reference": run_synthpre, "synthpre-cueq-capture": run_synthpre,
         "nequip-eager": run_nequip,
         "nequip-compile": run_nequip}


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def summarise(runs: dict[str, list[dict]], tta: bool) -> dict:
    """Each code's median over repeats, and the first code's speed-up over each other one
    from the medians: other time / first time for times, first rate / other rate for rates
    (> 1: the first code is faster), and memory / step ratios as first / other."""
    keys = (["train_wall_s", "train_cpu_s", "wall_after_first_step_s", "steps"] if tta else
            ["structures_per_s", "structures_per_cpu_s", "peak_rss_MiB"])
    med = {code: {k: median([r[k] for r in rs]) for k in keys}
           for code, rs in runs.items() if rs and all("error" not in r for r in rs)}
    out = {"medians": med}
    if not tta:  # per code, not ratios: step and warm-up times, GPU memory, ops per step
        extra = ("median_step_s", "warmup_s", "peak_cuda_MiB")
        out["per_code"] = {code: {**{k: median([r[k] for r in runs[code]]) for k in extra
                                     if k in runs[code][0]},
                                  **runs[code][0].get("ops_per_step", {})} for code in med}
    if len(med) > 1:
        first, *others = med

        def ratio(k, other):
            a, b = med[first][k], med[other][k]
            if k in ("train_wall_s", "train_cpu_s", "wall_after_first_step_s"):  # times
                a, b = b, a
            return a / b if b else None

        out["speedup_of_" + first] = {other: {("speedup_" if k != "steps" and k != "peak_rss_MiB"
                                                else "ratio_") + k: ratio(k, other)
                                               for k in keys} for other in others}
        for code, rs in runs.items():  # spread over repeats: how much of a ratio is noise
            if code in med and len(rs) > 1:
                k = keys[1]
                out.setdefault("spread_" + k, {})[code] = [min(r[k] for r in rs),
                                                           max(r[k] for r in rs)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", help="extxyz trajectories, the last for validation "
                    "(default: the demo's SNAP labels, or 'synthetic' frames without them)",
                    default=sorted(glob.glob(str(ROOT / "results/demo/labels/snap_c/*.extxyz")))
                    or ["synthetic"])
    ap.add_argument("--codes", nargs="+", choices=list(CODES), default=list(CODES))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--target-force-rmse", type=float,
                    help="time-to-accuracy run: train until the val force RMSE (eV/Å) is <= this")
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nequip-python", default="/tmp/nequip-venv/bin/python")
    ap.add_argument("--synthpre-python", default=sys.executable)
    ap.add_argument("--worker", choices=list(CODES))
    ap.add_argument("--avg-nn", type=float)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--timeout", type=float, help="seconds each code's process may take")
    args = ap.parse_args()
    if len(args.data) < 2 and args.data != ["synthetic"]:
        sys.exit("need at least two extxyz files (trajectories): the last is validation")
    if args.worker:
        result = CODES[args.worker](args)
        print("RESULT " + json.dumps(result))
        return

    avg_nn = average_neighbours(args.data, HYPER["r_max"])
    common = ["--data", *args.data, "--epochs", str(args.epochs), "--threads",
              str(args.threads), "--device", args.device, "--seed", str(args.seed),
              "--avg-nn", repr(avg_nn), "--max-steps", str(args.max_steps),
              "--eval-every", str(args.eval_every)]
    if args.target_force_rmse is not None:
        common += ["--target-force-rmse", repr(args.target_force_rmse)]
    runs: dict[str, list[dict]] = {code: [] for code in args.codes}
    for repeat in range(args.repeats):
        for code in args.codes:
            python = args.nequip_python if code.startswith("nequip") else args.synthpre_python
            try:
                proc = subprocess.run([python, __file__, "--worker", code, *common],
                                      capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{code}: over --timeout {args.timeout} s", file=sys.stderr)
                runs[code].append({"code": code, "error": f"over {args.timeout} s"})
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                runs[code].append({"code": code, "error": f"exit {proc.returncode}"})
                continue
            runs[code].append({**json.loads(lines[-1][len("RESULT "):]), "repeat": repeat})
            print(json.dumps(runs[code][-1]), flush=True)
    n_train = len(load_frames(args.data)[0])
    summary = {"machine": machine(), "device": args.device, "threads": args.threads,
               "epochs": args.epochs, "n_train": n_train, "avg_num_neighbors": avg_nn,
               "repeats": args.repeats, "runs": runs,
               **summarise(runs, args.target_force_rmse is not None)}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
