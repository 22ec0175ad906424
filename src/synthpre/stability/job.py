"""One stability job: every start x velocity seed with one potential, analysed, written once.

Without a model the job runs the teacher itself and writes the *reference* (its structure and
drift per run); with a model it runs the model, relabels its frames with the teacher and
compares its structure with the reference run of the same start and seed. All input is
checked before any MD starts; outputs are written atomically at the end, so a killed job
leaves nothing that looks finished.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
from ase import Atoms

from ..atomic import write_json
from ..provenance import code_version
from ..frames import write_frames
from ..label import isolated_atom_energies
from .analysis import (classify, drift_meV_per_atom_ps, pooled_relabel, relabel, structure,
                       summarise, unphysical_threshold)
from .run import run_md
from .settings import StabilitySettings, check_section, small_cell_problem
from .starts import check_species, read_start_source, select_starts
from .structure import rdf, rdf_distance
from ..teachers import Teacher, get_teacher


def model_potential(path: str, compile: bool, engine: str) -> tuple[Teacher, dict]:
    """A model file as a potential for LAMMPS, and its metadata. ``engine`` (``stability.engine``)
    ``fix_external``: synthpre's calculator called from LAMMPS, its fast kernel compiled or
    not (``model.compile``); ``plugin``: exported and run natively by ``pair_style metatomic``
    (synthpre.lammps_plugin; the export lives in a temporary folder while the potential does)."""
    from ..modelfile import load_model

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} not found")
    model, meta = load_model(path)
    meta = {**meta, "species": list(model.species)}
    if engine == "plugin":
        from ..lammps_plugin import plugin_potential

        folder = tempfile.mkdtemp(prefix="synthpre-plugin-")
        potential = plugin_potential(path, folder)
        weakref.finalize(potential, shutil.rmtree, folder, ignore_errors=True)
        return potential, meta
    if engine != "fix_external":
        raise ValueError(f"stability.engine must be fix_external or plugin (got {engine!r})")
    spec = {"kind": "ase", "model_path": str(path), "elements": list(model.species),
            "kwargs": {"compile": compile}}
    return get_teacher("model", {"model": spec}), meta


def teacher_vs_real(teacher: Teacher, test_path: str) -> dict:
    """The teacher's force error on the real test set (its labels, e.g. DFT): the gap the
    unphysical rule allows for, since a model fine-tuned on the real data need not agree
    with its teacher more closely than the teacher agrees with those data."""
    from ..lammps_system import single_point
    from ..shard_files import read_shard

    records = read_shard(test_path)
    if not records:
        raise ValueError(f"{test_path}: no test structures to compare the teacher with")
    calculator = teacher.make_calculator() if teacher.is_ase else None
    sq, n = 0.0, 0
    for r in records:
        atoms = Atoms(r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
        _, forces = single_point(atoms, teacher, calculator)
        sq += float(np.sum((forces - r["forces"]) ** 2))
        n += forces.size
    return {"force_rmse": math.sqrt(sq / n), "n_structures": len(records), "test": test_path}


def _unphysical_rule(cfg: StabilitySettings, ref: dict, metrics: str) -> dict:
    """The threshold of classify() for this model, with its inputs (docs/stability.md)."""
    gap = ref.get("teacher_vs_real_test")
    if gap is None:
        raise ValueError("the reference stability.json has no teacher_vs_real_test (written "
                         "by an older version); rerun rule stability_reference")
    test = json.loads(Path(metrics).read_text())["test_force_rmse"]
    return {"factor": cfg.failure.unphysical_factor, "model_test_force_rmse": test,
            "teacher_vs_real_force_rmse": gap["force_rmse"], "metrics": metrics,
            "force_rmse_threshold": unphysical_threshold(cfg.failure.unphysical_factor, test,
                                                         gap["force_rmse"])}


def run_stability_job(settings: dict, starts_path: str, out_json: str, out_frames: str,
                      model: str | None = None, reference: str | None = None,
                      point: str | None = None, lammps_args: tuple[str, ...] = (),
                      options: dict | None = None, metrics: str | None = None,
                      test: str | None = None) -> dict:
    """Run and analyse; ``settings`` holds ``stability``, ``elements``, ``teacher``, ``teachers``;
    ``options`` how a ``model`` runs (``job_settings.stability_run_options``). The teacher's job
    (no ``model``) also measures the teacher on the real ``test`` set; a model's job reads
    its own test error from ``metrics`` (its metrics.json) for the unphysical rule, which
    needs both (the pipeline passes both; by hand, without them no run is unphysical)."""
    check_section(settings["stability"])  # hand-written settings reach here unchecked
    cfg = StabilitySettings.from_config(settings["stability"], settings["elements"])
    teacher = get_teacher(settings["teacher"], settings.get("teachers"))
    starts = select_starts(read_start_source(starts_path), cfg.starts, settings["elements"],
                           starts_path)
    if (model is None and metrics is not None) or (model is not None and test is not None):
        raise ValueError("--metrics (the model's metrics.json) is for a model's stability job, "
                         "--test (the real test set) for the teacher's")
    warnings = sorted({w for a in starts
                       if (w := small_cell_problem(len(a), cfg.failure.max_temperature_factor))})
    for warning in warnings:
        print(f"WARNING: {warning}", flush=True)
    ref_runs, potential, meta, rule = None, teacher, {}, None
    if model is not None:
        if reference is None:
            raise ValueError("a model's stability job needs --reference (the teacher's run)")
        if options is None:
            raise ValueError("a model's stability job needs its run options (model.compile, "
                             "stability.engine)")
        potential, meta = model_potential(model, options["compile"], options["engine"])
        check_species(starts, meta["species"], starts_path, model)
        ref = json.loads(Path(reference).read_text())
        if ref["protocol"] != dataclasses.asdict(cfg.protocol) or ref["teacher"] != teacher.name:
            raise ValueError(f"reference {reference} was run with another protocol or teacher; "
                             f"rerun its rule")
        ref_runs = {r["run"]: r for r in ref["runs"]}
        rule = _unphysical_rule(cfg, ref, metrics) if metrics else None
    elements = sorted({s for a in starts for s in a.get_chemical_symbols()})
    e0_teacher = isolated_atom_energies(teacher, elements) if model is not None else {}
    calculator = teacher.make_calculator() if teacher.is_ase and model is not None else None

    runs, frames = [], []
    for k, start in enumerate(starts):
        for seed in cfg.velocity_seeds:
            run_id = f"start{k}-v{seed}"
            result = run_md(potential, start, cfg.protocol, cfg.failure, seed, run_id, k,
                            lammps_args)
            record = _run_record(result, cfg)
            if model is not None:
                _compare(record, result, ref_runs.get(run_id), cfg, teacher, meta["e0"],
                         e0_teacher, calculator)
            record["outcome"] = classify(record, rule and rule["force_rmse_threshold"])
            runs.append(record)
            frames.extend(result.frames)
            print(f"{run_id}: {record['time_ps']} ps, failure: {record['failure']}, outcome: "
                  f"{record['outcome']}", flush=True)

    out = {"point": point, "model": model, "teacher": teacher.name,
           "starts": starts_path, "protocol": dataclasses.asdict(cfg.protocol),
           "failure_criteria": dataclasses.asdict(cfg.failure),
           "analysis": dataclasses.asdict(cfg.analysis), "warnings": warnings,
           "unphysical_rule": rule, "runs": runs,
           "summary": summarise(runs, cfg.protocol), "code_version": code_version()}
    if model is not None:
        out["summary"]["relabel"] = pooled_relabel([r.pop("_relabel") for r in runs])
    else:
        out["rdf_r"] = rdf([starts[0]], cfg.analysis.rdf_r_max, cfg.analysis.rdf_bins)[0].tolist()
        out["teacher_vs_real_test"] = teacher_vs_real(teacher, test) if test else None
    write_frames(out_frames, frames)
    write_json(out_json, out)
    return out


def _run_record(result, cfg: StabilitySettings) -> dict:
    """The JSON record of one run; structure and drift only for a run that survived."""
    survived = result.failure is None
    shape = structure(result.frames, cfg.analysis) if survived else {
        "coordination": None, "coordination_by_pair": None, "rdf": None}
    return {"run": result.run_id, "start": result.start, "seed": result.seed,
            "natoms": result.natoms, "density": result.density, "survived": survived,
            "failure": result.failure, "time_ps": result.time_ps, "wall_s": result.wall_s,
            "cpu_s": result.cpu_s,
            "n_frames": len(result.frames), **shape,
            "nve_drift_meV_per_atom_ps": drift_meV_per_atom_ps(result.nve, result.natoms)
            if survived else None}


def _compare(record: dict, result, ref: dict | None, cfg: StabilitySettings, teacher: Teacher,
             e0_model: dict, e0_teacher: dict, calculator) -> None:
    """Teacher relabelling (every run, frames before any failure) and structure vs the
    teacher's run from the same start and seed (when both survived)."""
    part = relabel(result.frames, cfg.analysis.relabel_frames, teacher, e0_model, e0_teacher,
                   calculator)
    record["_relabel"] = part
    record["relabel"] = pooled_relabel([part])
    both = record["rdf"] is not None and ref is not None and ref["rdf"] is not None
    record["teacher_coordination"] = ref["coordination"] if both else None
    record["teacher_coordination_by_pair"] = ref.get("coordination_by_pair") if both else None
    record["rdf_distance"] = rdf_distance(record["rdf"], ref["rdf"]) if both else None
