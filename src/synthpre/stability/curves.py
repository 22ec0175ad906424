"""Stability over the learning curve: every model's stability.json -> one table and a figure
(survival and time survived against n, each fine-tuning mode vs scratch, per labeller)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .. import points  # noqa: E402
from ..atomic import atomic_path  # noqa: E402


def place(point: str) -> dict:
    """A stability result's model, as its table row names it (synthpre.points)."""
    found = points.parse(point)
    if found.mode == "pretrained":
        raise ValueError(f"point '{point}': stability runs a pre-trained model as "
                         f"pretrain/<labeller>[/k<size>]")
    return {"mode": found.mode, "labeller": found.labeller,
            "pretrain_size": found.pretrain_size, "n": found.n, "seed": found.seed}


def row(result: dict, ident: dict) -> dict:
    """One model's line: survival, the unphysical outcome (stable = survived and not
    unphysical), relabel errors, coordination (sp/sp2/sp3 for carbon; mean neighbours per
    element pair, ``cn_<A>-<B>``, for any chemistry), RDF distance and drift."""
    s = result["summary"]
    relabel = s.get("relabel") or {}
    coord, teacher = s["coordination"] or {}, s["teacher_coordination"] or {}
    rule = result.get("unphysical_rule") or {}
    gap = result.get("teacher_vs_real_test") or {}
    return {**ident, "n_runs": s["n_runs"], "survival_fraction": s["survival_fraction"],
            "n_unphysical": s.get("n_unphysical"), "stable_fraction": s.get("stable_fraction"),
            "unphysical_force_threshold": rule.get("force_rmse_threshold"),
            "model_test_force_rmse": rule.get("model_test_force_rmse"),
            "teacher_vs_real_force_rmse": rule.get("teacher_vs_real_force_rmse",
                                                   gap.get("force_rmse")),
            "mean_time_survived_ps": s["mean_time_survived_ps"],
            "mean_time_to_failure_ps": s["mean_time_to_failure_ps"],
            "protocol_ps": s["protocol_ps"],
            "failure_reasons": ";".join(f"{k}:{v}" for k, v in sorted(s["failure_reasons"].items())),
            "relabel_force_rmse": relabel.get("force_rmse"),
            "relabel_energy_rmse_per_atom_centered": relabel.get("energy_rmse_per_atom_centered"),
            **{f"{k}_fraction": coord.get(k) for k in ("sp", "sp2", "sp3")},
            **{f"teacher_{k}_fraction": teacher.get(k) for k in ("sp", "sp2", "sp3")},
            **{f"cn_{k}": v for k, v in (s.get("coordination_by_pair") or {}).items()},
            **{f"teacher_cn_{k}": v
               for k, v in (s.get("teacher_coordination_by_pair") or {}).items()},
            "rdf_distance": s["rdf_distance"],
            "nve_abs_drift_meV_per_atom_ps": s["nve_abs_drift_meV_per_atom_ps"]}


def stability_table(results: list[str], reference: str) -> pd.DataFrame:
    """One row per model (and one for the teacher itself, mode 'teacher')."""
    ref = json.loads(Path(reference).read_text())
    rows = [row(ref, {"mode": "teacher", "labeller": ref["teacher"], "pretrain_size": "none",
                      "n": None, "seed": None})]
    for path in results:
        result = json.loads(Path(path).read_text())
        rows.append(row(result, place(result["point"])))
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    return table.sort_values(["mode", "labeller", "pretrain_size", "n", "seed"],
                             na_position="first", ignore_index=True)


def plot(table: pd.DataFrame, figures: list[str]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    curves = table[~table["mode"].isin(["teacher", "pretrain"])]
    panels = (("survival_fraction", "runs surviving (fraction)"),
              ("mean_time_survived_ps", "time survived (ps, mean)"))
    for ax, (col, label) in zip(axes, panels):
        for (mode, labeller, size), curve in curves.groupby(["mode", "labeller",
                                                             "pretrain_size"]):
            name = "scratch" if mode == "scratch" else f"{mode} ({labeller}, {size})"
            mean = curve.groupby("n")[col].agg(["mean", "std"])
            ax.errorbar(mean.index.astype(int), mean["mean"], yerr=mean["std"].fillna(0),
                        marker="o", capsize=3, label=name)
        for _, pre in table[table["mode"] == "pretrain"].iterrows():
            ax.axhline(pre[col], ls="--", lw=1, color="gray",
                       label=f"pre-trained only ({pre['labeller']}, {pre['pretrain_size']})")
        ax.set(xscale="log", xlabel="real training structures n", ylabel=label)
        ns = sorted(curves["n"].dropna().astype(int).unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    for path in map(Path, figures):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix[1:])
    plt.close(fig)


def run_stability_curves_job(results: list[str], reference: str, out_csv: str,
                             figures: list[str]) -> pd.DataFrame:
    table = stability_table(results, reference)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot(table, figures)
    return table
