"""Learning curves: metrics of every point -> a table (mean and spread over seeds) and a plot."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .atomic import atomic_path  # noqa: E402

METRICS = {"test_energy_rmse_per_atom": ("Energy RMSE (meV/atom)", 1000.0),
           "test_force_rmse": ("Force RMSE (eV/Å)", 1.0)}


def load_metrics(paths: list[str]) -> pd.DataFrame:
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        rows.append({"mode": m["mode"], "labeller": m["labeller"], "n": m["n"], "seed": m["seed"],
                     **{k: m[k] for k in METRICS}, "epochs": m["epochs"],
                     "train_wall_s": m["train_wall_s"]})
    return pd.DataFrame(rows)


def learning_curve(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby(["mode", "labeller", "n"])
    table = grouped[list(METRICS)].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n_seeds"] = grouped.size()
    return table.reset_index().sort_values(["mode", "labeller", "n"])


def plot(table: pd.DataFrame, png: Path, svg: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, (metric, (label, factor)) in zip(axes, METRICS.items()):
        for (mode, labeller), curve in table.groupby(["mode", "labeller"]):
            name = "scratch" if mode == "scratch" else f"pre-trained ({labeller})"
            ax.errorbar(curve["n"], curve[f"{metric}_mean"] * factor,
                        yerr=curve[f"{metric}_std"].fillna(0) * factor, marker="o",
                        capsize=3, label=name)
        ax.set(xscale="log", yscale="log", xlabel="real training structures n", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    for path in (png, svg):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix[1:])
    plt.close(fig)


def aggregate(metric_files: list[str], out_dir: str) -> pd.DataFrame:
    out = Path(out_dir)
    table = learning_curve(load_metrics(metric_files))
    with atomic_path(out / "learning_curve.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot(table, out / "learning_curve.png", out / "learning_curve.svg")
    return table
