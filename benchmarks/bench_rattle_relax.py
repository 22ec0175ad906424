"""Teacher cost per synthetic frame: MD (melt-quench-anneal) vs rattle-and-relax chains.

Both through ``synthpre.md.run_md_job``, the code the ``md`` rule runs, with the same teacher,
cell size and density, one process, one thread, interleaved rounds (best of ``--repeats``,
also per second of process CPU time, robust to other jobs on a shared machine). MD: the
demo's protocol shortened (``--md-ps`` of anneal after 0.1 ps melt and quench), a frame every
0.1 ps (100 steps); rattle-relax: the schema's defaults (5 FIRE steps per frame, a fresh LAMMPS
system per link) with ``--chain`` frames.

    .venv/bin/python benchmarks/bench_rattle_relax.py [--teacher snap_c] [--atoms 64]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from synthpre import job_settings  # noqa: E402
from synthpre.config import complete  # noqa: E402
from synthpre.md import run_md_job  # noqa: E402


def config(sampling: str, teacher: str, atoms: int, md_ps: float, chain: int) -> dict:
    return complete({
        "run": "bench", "elements": ["C"],
        "synthetic": {"teacher": teacher, "labellers": [teacher], "n_atoms": atoms,
                      "densities": [2.5], "anneal_temperatures": [3000], "replicas": 1,
                      "sampling": sampling, "rattle_relax": {"chain_length": chain},
                      "protocol": {"dump_every_ps": 0.1, "stages": [
                          {"name": "melt", "T_start": 8000, "T_end": 8000, "duration_ps": 0.1},
                          {"name": "quench", "T_start": 8000, "T_end": "anneal",
                           "duration_ps": 0.1},
                          {"name": "anneal", "T_start": "anneal", "T_end": "anneal",
                           "duration_ps": md_ps}]}},
        "real": {"source": "x.extxyz"}, "finetune": {"n_train": [1], "seeds": [0]}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default="snap_c")
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--md-ps", type=float, default=1.0)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for sampling in ("md", "rattle-relax"):
                settings = job_settings.md(config(sampling, args.teacher, args.atoms,
                                                  args.md_ps, args.chain), args.teacher)
                wall, cpu = time.perf_counter(), time.process_time()
                status = run_md_job(settings, args.teacher, f"d2.5-T3000-r{r}",
                                    f"{tmp}/f.extxyz", f"{tmp}/s.json")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                n = status["n_frames"]
                assert status["failure"] is None and n > 0, status
                per = (wall / n, cpu / n)
                best[sampling] = min(best.get(sampling, per), per)
                print(f"round {r} {sampling}: {n} frames, {wall:.2f} s wall, {cpu:.2f} s CPU")
    md, rr = best["md"], best["rattle-relax"]
    print(f"\n{platform.node()}, {os.cpu_count()} CPUs; teacher {args.teacher}, "
          f"{args.atoms} atoms, best of {args.repeats}")
    print("| sampling | wall per frame | CPU per frame |\n|---|---|---|")
    print(f"| MD (100 steps per frame, incl. melt/quench) | {md[0] * 1000:.0f} ms | "
          f"{md[1] * 1000:.0f} ms |")
    print(f"| rattle-relax (5 FIRE steps per frame) | {rr[0] * 1000:.0f} ms | "
          f"{rr[1] * 1000:.0f} ms |")
    print(f"ratio MD / rattle-relax: {md[0] / rr[0]:.1f}x wall, {md[1] / rr[1]:.1f}x CPU")


if __name__ == "__main__":
    main()
