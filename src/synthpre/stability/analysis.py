"""What a stability run is measured by: energy drift, structure, the teacher's relabel, the
summary over runs and each run's outcome."""
from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from ..lammps_system import single_point
from ..teachers import Teacher
from .structure import (coordination_by_pair,
                        coordination_fractions, rdf)
from .settings import Analysis, StabilityProtocol


# ---------------------------------------------------------------- analysis

def drift_meV_per_atom_ps(nve: list[tuple[float, float]], natoms: int) -> float | None:
    """Slope of the NVE total energy per atom (meV/atom/ps); None with < 3 points."""
    if len(nve) < 3:
        return None
    t, e = np.array(nve).T
    return float(np.polyfit(t, e / natoms, 1)[0] * 1000.0)


def structure(frames: list[Atoms], analysis: Analysis) -> dict:
    """Coordination fractions and g(r) over the hold-stage frames."""
    hold = [f for f in frames if f.info["stage"] == "hold"]
    if not hold:
        return {"coordination": None, "coordination_by_pair": None, "rdf": None}
    return {"coordination": coordination_fractions(hold, analysis.coordination_cutoff),
            "coordination_by_pair": coordination_by_pair(hold, analysis.coordination_cutoff),
            "rdf": rdf(hold, analysis.rdf_r_max, analysis.rdf_bins)[1].tolist()}


def relabel(frames: list[Atoms], count: int, teacher: Teacher, e0_model: dict,
            e0_teacher: dict, calculator=None) -> dict:
    """Model vs teacher on ``count`` evenly spaced frames of one run: squared-error sums
    (pooled later) of force components and per-atom energies relative to isolated atoms."""
    if not frames or count == 0:
        return {"n_frames": 0, "force_sq_sum": 0.0, "n_force": 0, "energy_diff_per_atom": []}
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(count, len(frames)))
                       .round().astype(int).tolist()))
    f_sq, n_f, e_diff = 0.0, 0, []
    for k in picks:
        frame = frames[k]
        symbols = frame.get_chemical_symbols()
        energy, forces = single_point(frame, teacher, calculator)
        e_teacher = energy - sum(e0_teacher[s] for s in symbols)
        e_model = frame.info["model_energy"] - sum(e0_model[s] for s in symbols)
        e_diff.append((e_model - e_teacher) / len(frame))
        f_sq += float(np.sum((frame.arrays["model_forces"] - forces) ** 2))
        n_f += forces.size
    return {"n_frames": len(picks), "force_sq_sum": f_sq, "n_force": n_f,
            "energy_diff_per_atom": e_diff}


def pooled_relabel(parts: list[dict]) -> dict:
    """Force RMSE and per-atom energy RMSE about the mean offset (energy scales of model and
    teacher may differ by a constant per atom: the model may be fine-tuned on DFT)."""
    n_f = sum(p["n_force"] for p in parts)
    diffs = np.array([d for p in parts for d in p["energy_diff_per_atom"]])
    return {"n_frames": int(sum(p["n_frames"] for p in parts)),
            "force_rmse": math.sqrt(sum(p["force_sq_sum"] for p in parts) / n_f) if n_f else None,
            "energy_offset_per_atom": float(diffs.mean()) if diffs.size else None,
            "energy_rmse_per_atom_centered": float(diffs.std()) if diffs.size > 1 else None}


def summarise(runs: list[dict], protocol: StabilityProtocol) -> dict:
    """Survival fraction, times and reasons of failure, over all runs of one potential."""
    failed = [r["failure"] for r in runs if r["failure"]]
    reasons: dict[str, int] = {}
    for f in failed:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    total_ps = sum(s[3] for s in protocol.stages()) * protocol.timestep_fs / 1000.0

    def mean(key, f=float):
        values = [f(r[key]) for r in runs if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"n_runs": len(runs), "n_survived": len(runs) - len(failed),
            "survival_fraction": (len(runs) - len(failed)) / len(runs) if runs else None,
            "protocol_ps": round(total_ps, 6),
            "mean_time_survived_ps": float(np.mean([r["time_ps"] for r in runs])) if runs else None,
            "mean_time_to_failure_ps": float(np.mean([f["time_ps"] for f in failed]))
            if failed else None,
            "failure_reasons": reasons,
            "rdf_distance": mean("rdf_distance"),
            "nve_abs_drift_meV_per_atom_ps": mean("nve_drift_meV_per_atom_ps", abs),
            "coordination": _mean_fractions([r["coordination"] for r in runs]),
            "teacher_coordination": _mean_fractions([r.get("teacher_coordination")
                                                     for r in runs]),
            "coordination_by_pair": _mean_fractions([r.get("coordination_by_pair")
                                                     for r in runs]),
            "teacher_coordination_by_pair": _mean_fractions(
                [r.get("teacher_coordination_by_pair") for r in runs]),
            **_outcomes(runs)}


def _outcomes(runs: list[dict]) -> dict:
    """Counts of the three outcomes (classify_unphysical): stable runs are the survivors
    that are not unphysical."""
    unphysical = sum(r.get("outcome") == "unphysical" for r in runs)
    stable = sum(r.get("outcome", "survived" if r["survived"] else "failed") == "survived"
                 for r in runs)
    return {"n_unphysical": unphysical, "n_stable": stable,
            "stable_fraction": stable / len(runs) if runs else None}


def _mean_fractions(items: list[dict | None]) -> dict | None:
    """Means over runs; a key missing from a run counts 0 there (a coordination it never
    showed)."""
    items = [c for c in items if c]
    if not items:
        return None
    keys = sorted({k for c in items for k in c})
    return {k: float(np.mean([c.get(k, 0.0) for c in items])) for k in keys}


# ---------------------------------------------------------------- outcomes and cell size

# A survivor whose teacher-relabel force RMSE exceeds this many times the error one expects of
# it (its own test force RMSE plus the teacher-vs-DFT gap) is "unphysical": it stayed in one
# piece on a surface far from both the data and the teacher (docs/stability.md).
def unphysical_threshold(factor: float, model_test_force_rmse: float,
                         teacher_vs_real_force_rmse: float) -> float:
    """factor x (model's test force RMSE + teacher-vs-DFT force RMSE on the same test set):
    a model that is e away from DFT, when DFT is g away from the teacher, can be e + g away
    from the teacher on data-like structures (triangle inequality)."""
    return factor * (model_test_force_rmse + teacher_vs_real_force_rmse)


def classify(record: dict, threshold: float | None) -> str:
    """The run's outcome: "failed" (the detector stopped it), "unphysical" (it survived but
    its teacher-relabel force RMSE is above ``threshold``) or "survived"."""
    if not record["survived"]:
        return "failed"
    force = (record.get("relabel") or {}).get("force_rmse")
    if threshold is not None and force is not None and force > threshold:
        return "unphysical"
    return "survived"
