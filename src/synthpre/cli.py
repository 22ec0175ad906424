"""The command line: one subcommand per pipeline stage; each Snakemake rule calls one.

Settings come as the JSON slice of the config that the stage's rule passes (``--settings
'{...}'`` or ``--settings @file.json``, see ``synthpre.job_settings``) or as the pipeline's own
YAML (``--configfile config.yaml``), so every stage also runs by hand without Snakemake. The
work itself lives in the module named after the rule (md.py, shard.py, train.py, ...).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import job_settings
from .lammps_runtime import finalize_mpi
from .preemption import Preempted
from .progress import TerminalLogHandler

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: the job failed for now; a retry resumes it


def _settings(args) -> dict:
    """The stage's settings: ``--settings`` JSON (what its rule passes) or ``--configfile``
    YAML, from which ``synthpre.job_settings`` takes the same slice the rule would pass."""
    if args.configfile:
        from .config import load_config
        return args.slice(load_config(*args.configfile), args)
    text = args.settings
    return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)


def _add_omp_threads(p: argparse.ArgumentParser) -> None:
    """The LAMMPS-running commands (md, label, stability) share one thread option."""
    p.add_argument("--omp-threads", type=int, default=0,
                   help="OpenMP threads per MPI rank for LAMMPS (-sf omp -pk omp N)")


def _add_settings(p: argparse.ArgumentParser, slice_of, required: bool = True) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--settings", help="JSON (or @file.json): the slice the rule passes "
                                          "(synthpre.job_settings)")
    group.add_argument("--configfile", nargs="+", help="the pipeline's YAML config file(s), "
                                                      "as given to Snakemake")
    p.set_defaults(slice=slice_of)


def cmd_md(args) -> None:
    from .lammps_system import omp_args
    from .md import run_md_job

    status = run_md_job(_settings(args), args.teacher, args.job, args.out_frames,
                        args.out_status, lammps_args=omp_args(args.omp_threads))
    if status is not None:
        print(f"{args.job}: {status['n_frames']} frames, {status['atom_steps_per_s']:.0f} "
              f"atom-steps/s, failure: {status['failure']}")


def cmd_label(args) -> None:
    """Label one frames file; under ``mpiexec -n N`` every rank runs LAMMPS, rank 0 writes."""
    from .label import run_label_job
    from .lammps_system import omp_args

    settings = _settings(args) if (args.settings or args.configfile) else {"teachers": {}}
    n = run_label_job(settings, args.labeller, args.frames, args.out,
                      omp_args(args.omp_threads))
    if n is not None:  # rank 0
        print(f"labelled {n} frames with {args.labeller}")


def cmd_teacher_finetune(args) -> None:
    from .teacher_finetune import run_teacher_finetune_job

    summary = run_teacher_finetune_job(_settings(args), args.pool, args.out)
    print(f"teacher {summary['teacher']}: {summary['real_structures']} real structures, force "
          f"RMSE on them {summary['force_rmse_before']:.3f} -> "
          f"{summary['force_rmse_after']:.3f} eV/A")


def cmd_shard(args) -> None:
    from .shard import run_shard_job

    manifest = run_shard_job(_settings(args), args.labelled, args.status, args.manifest)
    print(json.dumps({k: manifest[k] for k in ("counts", "dropped", "failed_trajectories")}))


def cmd_real_data(args) -> None:
    from .real_data import run_real_data_job

    print(json.dumps(run_real_data_job(_settings(args), args.source, args.out_dir)))


def cmd_fetch_real(args) -> None:
    from .fetch_real import run_fetch_real_job

    print(f"fetched {run_fetch_real_job(args.dataset, args.out, args.root)} structures")


def cmd_dft(args) -> None:
    from .dft import run_dft_job

    summary = run_dft_job(_settings(args), args.structures, args.batch, args.cache_dir,
                          args.out)
    print(json.dumps(summary, default=str))


def _run_options(args) -> dict:
    """How the stage runs its model (``job_settings.RUN_FIELDS``; not part of its settings):
    ``--run-options`` JSON beside ``--settings``, or taken from ``--configfile``."""
    if args.configfile:
        from .config import load_config
        return args.run_slice(load_config(*args.configfile), args)
    if not args.run_options:
        raise ValueError("--run-options is needed with --settings (the JSON of "
                         "synthpre.job_settings' *_run_options; or give --configfile)")
    return json.loads(args.run_options)


def _add_run_options(p: argparse.ArgumentParser, slice_of) -> None:
    p.add_argument("--run-options", help="JSON: how it runs the model, not what it computes "
                                         "(synthpre.job_settings.RUN_FIELDS; with --settings)")
    p.set_defaults(run_slice=slice_of)


def cmd_train(args) -> None:
    from .train import run_train_job

    run_train_job(_settings(args), _run_options(args), args.stage, args.out,
                  manifest=args.manifest,
                  real_dir=args.real_dir, n=args.n, seed=args.seed, init=args.init,
                  n_pretrain=args.n_pretrain)


def cmd_evaluate(args) -> None:
    from .evaluate import run_evaluate_job

    metrics = run_evaluate_job(args.model, args.test, args.val, args.point, args.out,
                               args.parity, init=args.init, synthetic_manifest=args.synthetic_val,
                               real_dir=args.real_dir, shift_n=args.fit_shift_n)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}))


def cmd_aggregate(args) -> None:
    from .aggregate import run_aggregate_job

    print(run_aggregate_job(args.metrics, args.out_dir, parity=args.parity,
                            manifests=args.manifests, real_summary=args.real_summary,
                            md_status=args.md_status).to_string())


def cmd_export(args) -> None:
    from .export import export_model

    export_model(args.model, args.out)
    print(f"exported {args.model} -> {args.out} (metatomic; docs/deploy.md)")


def cmd_lammps_plugin(args) -> None:
    """Build (once, cached under the venv) the pair_style metatomic plugin; print its path."""
    from .lammps_plugin import plugin_path

    print(plugin_path(rebuild=args.rebuild))


def cmd_stability(args) -> None:
    """One potential in MD from every start: the teacher (no --model) or a model file."""
    from .lammps_system import omp_args
    from .stability.job import run_stability_job

    out = run_stability_job(_settings(args), args.starts, args.out, args.frames,
                            model=args.model, reference=args.reference, point=args.point,
                            options=_run_options(args) if args.model else None,
                            lammps_args=omp_args(args.omp_threads), metrics=args.metrics,
                            test=args.test)
    print(json.dumps(out["summary"]))


def cmd_stability_starts(args) -> None:
    from .stability.starts import run_stability_starts_job

    from .lammps_system import mpi_rank

    cells = run_stability_starts_job(_settings(args), args.out)  # under mpiexec/srun: rank 0 writes
    if mpi_rank() == 0:
        print(f"{len(cells)} start cells -> {args.out}")


def cmd_stability_curves(args) -> None:
    from .stability.curves import run_stability_curves_job

    print(run_stability_curves_job(args.results, args.reference, args.out_csv, args.out_figure)
          .to_string())


def cmd_dag(args) -> None:
    """The rule graph as SVG, without Graphviz (see synthpre.dag)."""
    from .atomic import atomic_path
    from .dag import parse_dot, render_svg

    text = Path(args.dot).read_text() if args.dot != "-" else sys.stdin.read()
    svg = render_svg(parse_dot(text))
    if args.out == "-":
        sys.stdout.write(svg)
        return
    with atomic_path(args.out) as tmp:
        tmp.write_text(svg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthpre", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("md", help="one teacher MD trajectory")
    _add_settings(p, lambda config, args: job_settings.md(config, args.teacher))
    p.add_argument("--teacher", required=True)
    p.add_argument("--job", required=True, help="d<density>-T<anneal K>-r<replica>")
    p.add_argument("--out-frames", required=True)
    p.add_argument("--out-status", required=True)
    _add_omp_threads(p)
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("label", help="label MD frames with one labeller")
    _add_settings(p, lambda config, args: job_settings.label(config, args.labeller),
                  required=False)  # a built-in labeller needs none
    p.add_argument("--labeller", required=True)
    p.add_argument("--frames", required=True)
    p.add_argument("--out", required=True)
    _add_omp_threads(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("teacher-finetune", help="fine-tune a foundation teacher on a subset "
                                                "of the real training pool")
    _add_settings(p, lambda config, args: job_settings.teacher_finetune(config, args.teacher))
    p.add_argument("--teacher", help="the teacher's name (with --configfile)")
    p.add_argument("--pool", required=True, help="the real training pool (real/pool.h5)")
    p.add_argument("--out", required=True, help="the model file (<out>.json: what it saw)")
    p.set_defaults(func=cmd_teacher_finetune)

    p = sub.add_parser("shard", help="filter, split by trajectory and shard labelled frames")
    _add_settings(p, lambda config, args: job_settings.shard(config))
    p.add_argument("--labelled", nargs="+", required=True)
    p.add_argument("--status", nargs="*", default=[])
    p.add_argument("--manifest", required=True)
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("real-data", help="ingest a real data set: splits and nested subsets")
    _add_settings(p, lambda config, args: job_settings.real(config))
    p.add_argument("--source", required=True, nargs="+", help="extxyz file(s) of the real data")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_real_data)

    p = sub.add_parser("fetch-real", help="download a public data set with load-atoms")
    p.add_argument("--dataset", required=True, help="load-atoms name (e.g. C-GAP-17) or a file")
    p.add_argument("--root", required=True, help="load-atoms cache folder")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_fetch_real)

    p = sub.add_parser("dft", help="label one batch of structures with GPAW (resumable)")
    _add_settings(p, lambda config, args: job_settings.dft(config))
    p.add_argument("--structures", required=True, help="extxyz of all structures")
    p.add_argument("--batch", type=int, required=True, help="batch index (dft.batch_size each)")
    p.add_argument("--cache-dir", required=True, help="finished structures, reused on rerun")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_dft)

    p = sub.add_parser("train", help="pre-train, fine-tune or train from scratch")
    _add_settings(p, lambda config, args: job_settings.train(config, args.stage))
    p.add_argument("--stage", choices=["pretrain", "finetune", "replay", "frozen", "scratch"],
                   required=True, help="replay and frozen: fine-tuning modes (synthpre.train)")
    _add_run_options(p, lambda config, args: job_settings.train_run_options(config, args.stage))
    p.add_argument("--manifest", help="shard manifest (pre-training; replay's synthetic frames)")
    p.add_argument("--n-pretrain", type=int,
                   help="pre-train on this many synthetic structures (by trajectory), not all")
    p.add_argument("--real-dir", help="real data folder (fine-tuning and scratch)")
    p.add_argument("--n", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--init", help="pre-trained model to start from (fine-tuning modes)")
    p.add_argument("--out", required=True, help="model file to write")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="errors of a model on the real test set")
    p.add_argument("--model", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--point", required=True, help="e.g. finetune/snap_c/n25/s1 or scratch/n25/s1")
    p.add_argument("--out", required=True, help="metrics.json")
    p.add_argument("--parity", required=True, help="parity.npz (test-set predictions)")
    p.add_argument("--init", help="the pre-trained model a fine-tuned point started from")
    p.add_argument("--synthetic-val", help="shard manifest of that model's labeller: "
                                           "forgetting on its synthetic validation set")
    p.add_argument("--fit-shift-n", type=int, default=0,
                   help="a pretrained/.../n0 point: fit the energy shift to the seed's first N "
                        "training structures first, as fine-tuning at n=N starts (0: none)")
    p.add_argument("--real-dir", help="real data folder (pool.h5), for --fit-shift-n")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("aggregate", help="learning-curve table and plot")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--parity", nargs="+", required=True, help="parity.npz beside each metrics")
    p.add_argument("--manifests", nargs="+", required=True, help="synthetic shard manifests")
    p.add_argument("--real-summary", required=True, help="real/subsets.json")
    p.add_argument("--md-status", nargs="+", required=True, help="md.json of every trajectory")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("export", help="a model file as a metatomic model for MD engines")
    p.add_argument("model", help="model.pt written by synthpre train")
    p.add_argument("out", help="metatomic model file to write (its folder must exist)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("lammps-plugin", help="build the LAMMPS plugin for exported models "
                                             "(pair_style metatomic; cached) and print its path")
    p.add_argument("--rebuild", action="store_true", help="build again even if cached")
    p.set_defaults(func=cmd_lammps_plugin)

    p = sub.add_parser("stability", help="a model (or, without --model, the teacher) in MD: "
                                         "survival, failure reasons, drift, structure")
    _add_settings(p, lambda config, args: job_settings.stability(config))
    _add_run_options(p, lambda config, args: job_settings.stability_run_options(config))
    p.add_argument("--starts", required=True, help="real test set (.h5) or extxyz of start cells")
    p.add_argument("--model", help="model.pt to test; without it the teacher runs (reference)")
    p.add_argument("--reference", help="the teacher's stability.json (with --model)")
    p.add_argument("--metrics", help="the model's metrics.json (with --model): its test force "
                                     "RMSE, for the unphysical rule")
    p.add_argument("--test", help="the real test set (.h5; without --model): the teacher's "
                                  "force error on it, for the unphysical rule")
    p.add_argument("--point", help="e.g. scratch/n25/s1 or pretrain/snap_c (recorded)")
    p.add_argument("--out", required=True, help="stability.json")
    p.add_argument("--frames", required=True, help="extxyz of the dumped frames")
    _add_omp_threads(p)
    p.set_defaults(func=cmd_stability)

    p = sub.add_parser("stability-starts", help="start cells for stability MD, melted and "
                                                "quenched by the teacher")
    _add_settings(p, lambda config, args: job_settings.stability_starts(config))
    p.add_argument("--out", required=True, help="extxyz of the start cells")
    p.set_defaults(func=cmd_stability_starts)

    p = sub.add_parser("stability-curves", help="stability table and figure over all models")
    p.add_argument("--results", nargs="+", required=True, help="stability.json of every model")
    p.add_argument("--reference", required=True, help="the teacher's stability.json")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-figure", nargs="+", required=True, help="png and/or svg")
    p.set_defaults(func=cmd_stability_curves)

    p = sub.add_parser("dag", help="draw `snakemake --rulegraph` as SVG (no Graphviz needed)")
    p.add_argument("--dot", default="-", help="the rule graph in DOT (default: standard input)")
    p.add_argument("--out", default="-", help="SVG file to write (default: standard output)")
    p.set_defaults(func=cmd_dag)
    return parser


# Signals a job can still report before it dies (SIGKILL, exit 137, cannot be caught: the OOM
# killer, or SLURM after its grace period; then Snakemake's own log shows the exit status).
REPORTED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGXCPU")


def log_kill_signals(command: str) -> None:
    """Say in the job's log that it was killed from outside, by which signal and after how
    long, then die of that signal as before (exit status 128 + n for Snakemake), instead of
    ending with an empty or half-written log. A stage that handles a signal itself (training
    checkpoints on SIGTERM, synthpre.preemption) installs its own handler after this one."""
    import signal
    import time

    started = time.monotonic()

    def report(signum, frame):
        print(f"synthpre {command}: killed by signal {signal.Signals(signum).name} after "
              f"{time.monotonic() - started:.0f} s (from outside the job: a scheduler's time "
              f"limit, scancel, a Ctrl-C); its outputs are not written", file=sys.stderr,
              flush=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for name in REPORTED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_kill_signals(args.command)
    # Under torchrun or srun every rank logs into the same rule log: say which rank speaks.
    env = os.environ
    world = int(env.get("WORLD_SIZE") or env.get("SLURM_STEP_NUM_TASKS") or 1)
    rank = f"[rank {env.get('RANK') or env.get('SLURM_PROCID', 0)}] " if world > 1 else ""
    # stderr: the rule's log file, or a terminal, where a progress bar stays below the lines
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {rank}%(name)s: %(message)s",
                        handlers=[TerminalLogHandler(sys.stderr)])
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"synthpre {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # the --settings JSON lacks a field this stage reads
        print(f"synthpre {args.command}: error: --settings has no field {err} (see "
              f"synthpre.job_settings for what each stage reads)", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"synthpre {args.command}: preempted, resumable: {stop}", file=sys.stderr)
        return PREEMPTED_EXIT
    finally:
        finalize_mpi()  # under mpiexec: no rank exits while rank 0 still writes
    return 0


if __name__ == "__main__":
    sys.exit(main())
