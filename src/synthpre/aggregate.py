"""Learning curves: metrics of every point -> a table (mean and spread over seeds) and a plot."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .atomic import atomic_path, read_json  # noqa: E402

METRICS = {"test_energy_rmse_per_atom": ("Energy RMSE (meV/atom)", 1000.0),
           "test_force_rmse": ("Force RMSE (eV/Å)", 1.0)}


# The training budget each point got (training.py's stopping rule), kept beside its errors.
BUDGET = ["steps", "epochs", "best_epoch", "train_wall_s"]
# Forgetting: a fine-tuned model's errors on its labeller's synthetic validation set, and the
# pre-trained model's it started from (synthpre.evaluate.forgetting); none for scratch.
FORGETTING = [f"{who}synthetic_val_{key}" for who in ("", "pretrained_")
              for key in ("energy_rmse_per_atom", "force_rmse")]


def load_metrics(paths: list[str]) -> pd.DataFrame:
    rows = []
    for path in paths:
        m = read_json(path, "metrics file")
        rows.append({"mode": m["mode"], "labeller": m["labeller"], "n_pretrain": m["n_pretrain"],
                     "n": m["n"], "seed": m["seed"],
                     **{k: m[k] for k in METRICS}, **{k: m[k] for k in BUDGET},
                     **{k: m.get(k) for k in FORGETTING},
                     "stop_reason": m["stop_reason"], "metrics_file": path})
        if (m["mode"] in UNTUNED) != (m.get(FORGETTING[0]) is None):
            raise ValueError(f"{path}: a fine-tuned point needs its synthetic-validation "
                             f"errors (forgetting) and scratch has none; re-evaluate it")
    return pd.DataFrame(rows)


FAMILY = ["mode", "labeller", "n_pretrain"]  # one curve: a model family over n
# Rows that are not fine-tuned: scratch, and "pretrained", each pre-trained model before any
# fine-tuning step (the n=0 row of its curves; synthpre.evaluate.before_finetuning).
PRETRAINED = "pretrained"
UNTUNED = ("scratch", PRETRAINED)


MODE_NAMES = {"finetune": "fine-tuned", "replay": "replay fine-tuned",
              "frozen": "frozen-layer fine-tuned"}


def family_name(mode: str, labeller: str, n_pretrain: int) -> str:
    if mode == PRETRAINED:
        return f"pre-trained, n=0 ({labeller}, {n_pretrain} synthetic)"
    return "scratch" if mode == "scratch" else \
        f"{MODE_NAMES[mode]} ({labeller}, {n_pretrain} synthetic)"


def learning_curve(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby([*FAMILY, "n"])
    table = grouped[list(METRICS) + FORGETTING].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n_seeds"] = grouped.size()
    for key in BUDGET:
        table[f"{key}_mean"] = grouped[key].mean()
    table["stop_reasons"] = grouped["stop_reason"].agg(lambda r: " ".join(sorted(set(r))))
    table = table.reset_index().sort_values([*FAMILY, "n"])
    return add_data_efficiency(table)


def equivalent_n(sizes, errors, target: float) -> tuple[float | None, str]:
    """The n at which a curve of (sizes, errors) reaches ``target``: piecewise linear in
    log-log, between the first bracketing pair of points ("interpolated"), else along the
    nearest end segment ("extrapolated") when that segment falls; otherwise (None, "not
    reached")."""
    x, y, t = np.log(np.asarray(sizes, float)), np.log(np.asarray(errors, float)), np.log(target)
    for i in range(len(x) - 1):
        if min(y[i], y[i + 1]) <= t <= max(y[i], y[i + 1]) and y[i] != y[i + 1]:
            return float(np.exp(x[i] + (t - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))), \
                "interpolated"
    i = 0 if t > y[0] else len(x) - 2
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
    if slope < 0:
        return float(np.exp(x[i] + (t - y[i]) / slope)), "extrapolated"
    return None, "not reached"


def add_data_efficiency(table: pd.DataFrame) -> pd.DataFrame:
    """For each pre-trained point: how many real structures a scratch model needs for the same
    test error (the paper: 25 with pre-training about match 800 without). Needs two or more
    scratch sizes; the ``*_how`` column says whether the number was interpolated."""
    scratch = table[table["mode"] == "scratch"].sort_values("n")
    if len(scratch) < 2:
        return table
    for metric, short in (("test_force_rmse", "force"), ("test_energy_rmse_per_atom", "energy")):
        found = [equivalent_n(scratch["n"], scratch[f"{metric}_mean"], row[f"{metric}_mean"])
                 if row["mode"] != "scratch" else (None, "") for _, row in table.iterrows()]
        table[f"scratch_n_equivalent_{short}"] = [n for n, _ in found]
        table[f"scratch_n_equivalent_{short}_how"] = [how for _, how in found]
    return table


def _seen(rows: pd.DataFrame) -> str:
    """Legend suffix: how many real structures the family's (fine-tuned) teacher saw."""
    n = int(rows["teacher_real_structures"].max()) if "teacher_real_structures" in rows else 0
    return f"; teacher saw {n} real" if n else ""


def plot(table: pd.DataFrame, png: Path, svg: Path) -> None:
    """The learning curves on log-log axes; each pre-trained model's n=0 row (no place on a
    log axis) is a star at half the smallest n, labelled n=0."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    curves = table[table["mode"] != PRETRAINED]
    x_zero = curves["n"].min() / 2 if len(curves) else 0.5
    for ax, (metric, (label, factor)) in zip(axes, METRICS.items()):
        for family, curve in curves.groupby(FAMILY):
            ax.errorbar(curve["n"], curve[f"{metric}_mean"] * factor,
                        yerr=curve[f"{metric}_std"].fillna(0) * factor, marker="o",
                        capsize=3, label=family_name(*family) + _seen(curve))
        for family, row in table[table["mode"] == PRETRAINED].groupby(FAMILY):
            ax.errorbar([x_zero], row[f"{metric}_mean"] * factor,
                        yerr=row[f"{metric}_std"].fillna(0) * factor, marker="*",
                        markersize=10, ls="none", capsize=3,
                        label=family_name(*family) + _seen(row))
        if (table["mode"] == PRETRAINED).any():
            ax.axvline(x_zero * 1.4, color="0.6", lw=0.8, ls=":")
            ax.annotate("n=0", (x_zero, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="real training structures n", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    for path in (png, svg):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix[1:])
    plt.close(fig)


def size_grid(table: pd.DataFrame, mode: str, labeller: str) -> pd.DataFrame:
    """Mean test force RMSE with synthetic structures (rows, 0 = scratch) x real structures
    (columns) for one fine-tuning mode and labeller: the paper's heat map."""
    rows = pd.concat([table[table["mode"] == "scratch"],
                      table[(table["mode"] == mode) & (table["labeller"] == labeller)]])
    return rows.pivot(index="n_pretrain", columns="n", values="test_force_rmse_mean")


def plot_size_sweep(table: pd.DataFrame, png: Path) -> None:
    """The heat map of ``size_grid``, one panel per fine-tuning mode and labeller."""
    panels = sorted({(m, lab) for m, lab in zip(table["mode"], table["labeller"])
                     if m not in UNTUNED})
    grids = [size_grid(table, mode, labeller) for mode, labeller in panels]
    low = min(float(np.nanmin(g.to_numpy())) for g in grids)  # one colour scale: panels compare
    high = max(float(np.nanmax(g.to_numpy())) for g in grids)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4),
                             squeeze=False, constrained_layout=True)
    for ax, (mode, labeller), grid in zip(axes[0], panels, grids):
        image = ax.imshow(grid.to_numpy(), origin="lower", cmap="viridis_r", aspect="auto",
                          vmin=low, vmax=high)
        ax.set_xticks(range(grid.shape[1]), grid.columns)
        ax.set_yticks(range(grid.shape[0]), grid.index)
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="k" if value < (low + high) / 2 else "w")
        ax.set(xlabel="real training structures n", ylabel="synthetic structures")
        ax.set_title(f"test force RMSE (eV/Å), {MODE_NAMES[mode]}, {labeller}", fontsize=9)
        fig.colorbar(image, ax=ax)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_forgetting(table: pd.DataFrame, png: Path) -> None:
    """Each fine-tuned family's errors on its labeller's synthetic validation set against n,
    with the pre-trained model it started from as a dashed line: what fine-tuning forgot."""
    tuned = table[~table["mode"].isin(UNTUNED)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, (key, label, factor) in zip(axes, (
            ("energy_rmse_per_atom", "synthetic val energy RMSE (meV/atom)", 1000.0),
            ("force_rmse", "synthetic val force RMSE (eV/Å)", 1.0))):
        for family, curve in tuned.groupby(FAMILY):
            line = ax.errorbar(curve["n"], curve[f"synthetic_val_{key}_mean"] * factor,
                               yerr=curve[f"synthetic_val_{key}_std"].fillna(0) * factor,
                               marker="o", capsize=3, label=family_name(*family))
            if family[0] == "finetune" or not (tuned["mode"] == "finetune").any():
                ax.axhline(curve[f"pretrained_synthetic_val_{key}_mean"].iloc[0] * factor,
                           ls="--", lw=1, color=line[0].get_color())
        ax.set(xscale="log", yscale="log", xlabel="real training structures n", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, title="dashed: before fine-tuning", title_fontsize=7)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_parity(metrics: pd.DataFrame, parity_files: dict[str, str], png: Path) -> None:
    """Test-set parity at the largest n, first seed, one column per model family."""
    picks = metrics.sort_values(["n", "seed"], ascending=[False, True]).groupby(FAMILY).head(1)
    fig, axes = plt.subplots(2, len(picks), figsize=(3.2 * len(picks), 6.2), squeeze=False,
                             constrained_layout=True)
    for col, (_, row) in enumerate(picks.iterrows()):
        data = np.load(parity_files[row["metrics_file"]])
        name = family_name(row["mode"], row["labeller"], row["n_pretrain"])
        for ax, key, unit in ((axes[0, col], "energy", "eV/atom"), (axes[1, col], "forces", "eV/Å")):
            ref, pred = data[f"{key}_ref"], data[f"{key}_pred"]
            ax.scatter(ref, pred, s=3, alpha=0.5)
            lims = [min(ref.min(), pred.min()), max(ref.max(), pred.max())]
            ax.plot(lims, lims, "k--", lw=0.8)
            ax.set(xlabel=f"reference {key} ({unit})", ylabel=f"predicted ({unit})",
                   title=f"{name}, n={row['n']}, seed {row['seed']}")
            ax.title.set_fontsize(8)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def dataset_table(manifests: list[str], real_summary: str) -> pd.DataFrame:
    """One row per data set: each labeller's synthetic splits and the real splits."""
    rows = []
    for path in manifests:
        m = json.loads(Path(path).read_text())
        for split, stats in m["stats"].items():
            rows.append({"data": f"synthetic ({m['labeller']})", "split": split, **stats,
                         "failed_trajectories": len(m["failed_trajectories"])})
    real = json.loads(Path(real_summary).read_text())
    for split in ("test", "val", "pool"):
        rows.append({"data": "real", "split": split, "n_structures": real[f"n_{split}"]})
    return pd.DataFrame(rows)


def wall_times(metrics: pd.DataFrame, md_status: list[str]) -> pd.DataFrame:
    """Wall time of every MD and training job (training from the model file's record)."""
    statuses = [json.loads(Path(p).read_text()) for p in md_status]
    rows = [{"job": f"md {st['traj_id']}", "wall_s": st["wall_s"]} for st in statuses]
    rows += [{"job": f"{family_name(r['mode'], r['labeller'], r['n_pretrain'])} n={r['n']} "
                     f"seed={r['seed']}",
              "wall_s": r["train_wall_s"]} for _, r in metrics.iterrows()
             if r["mode"] != PRETRAINED]
    return pd.DataFrame(rows)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def add_teacher_knowledge(table: pd.DataFrame, manifests: list[str]) -> pd.DataFrame:
    """Column ``teacher_real_structures``: real structures the teachers of each row's
    synthetic data saw (fine-tuned teachers, synthpre.teacher_finetune; 0 for scratch and
    for raw teachers), so teacher knowledge is not read as the student's data efficiency."""
    seen = {m["labeller"]: int(m.get("teacher_real_structures", 0))
            for m in (json.loads(Path(p).read_text()) for p in manifests)}
    table = table.copy()
    table["teacher_real_structures"] = [0 if mode == "scratch" else seen.get(lab, 0)
                                        for mode, lab in zip(table["mode"], table["labeller"])]
    return table


def run_aggregate_job(metric_files: list[str], out_dir: str, parity: list[str],
                      manifests: list[str], real_summary: str,
                      md_status: list[str]) -> pd.DataFrame:
    out = Path(out_dir)
    metrics = load_metrics(metric_files)
    table = add_teacher_knowledge(learning_curve(metrics), manifests)
    write_csv(table, out / "learning_curve.csv")
    plot(table, out / "learning_curve.png", out / "learning_curve.svg")
    plot_size_sweep(table, out / "synthetic_size.png")
    plot_forgetting(table, out / "forgetting.png")
    plot_parity(metrics, dict(zip(metric_files, parity)), out / "parity.png")
    write_csv(dataset_table(manifests, real_summary), out / "datasets.csv")
    write_csv(wall_times(metrics, md_status), out / "wall_times.csv")
    return table
