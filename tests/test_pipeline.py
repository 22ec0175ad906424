"""The whole Snakemake pipeline on the tiny config: DAG, a full run, rerunning one point, and
bad config stopping the run before any job starts."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from synthpre.frames import read_frames, write_frames
from synthpre.model import NequIP

from snakemake_run import REPO, SNAKEMAKE, snakemake, write_override


@pytest.mark.slow
def test_tiny_pipeline_writes_learning_curves(tiny_run, real_like_file):
    curves = tiny_run / "results" / "tiny" / "curves"
    table = pd.read_csv(curves / "learning_curve.csv")
    combos = set(zip(table["mode"], table["labeller"], table["n"])) - \
        {("pretrained", "snap_c", 0), ("pretrained", "lcbop", 0)}  # the n=0 rows, below
    assert combos == {("scratch", "none", 3), ("scratch", "none", 6),
                      ("finetune", "snap_c", 3), ("finetune", "snap_c", 6),
                      ("finetune", "lcbop", 3), ("finetune", "lcbop", 6)}
    zero = table[table["mode"] == "pretrained"]
    assert len(zero) == 4 and (zero["n"] == 0).all() and (zero["steps_mean"] == 0).all()
    assert (zero["test_force_rmse_mean"] > 0).all()
    n0 = json.loads((tiny_run / "results/tiny/pretrained/lcbop/k4/n0/s1/metrics.json")
                    .read_text())
    assert n0["shift_fitted_on_n"] == 3 and n0["n_pretrain"] == 4  # tiny fits the shift
    assert (table["test_force_rmse_mean"] > 0).all()
    assert (curves / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (curves / "learning_curve.svg").read_text()[:500]
    assert (curves / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    datasets = pd.read_csv(curves / "datasets.csv")
    assert set(datasets["data"]) == {"synthetic (snap_c)", "synthetic (lcbop)", "real"}
    real = datasets[datasets["data"] == "real"].set_index("split")["n_structures"]
    assert real.sum() == len(read_frames(real_like_file))
    assert " " in json.loads((curves.parent / "real/summary.json").read_text())["source"][0]
    walls = pd.read_csv(curves / "wall_times.csv")
    assert len(walls) == 2 + len(table) - len(zero) and (walls["wall_s"] > 0).all()
    manifest = json.loads((tiny_run / "results/tiny/shards/lcbop/manifest.json").read_text())
    assert manifest["labeller"] == "lcbop" and manifest["counts"]["val"] > 0
    metrics = json.loads((tiny_run / "results/tiny/finetune/snap_c/n3/s1/metrics.json").read_text())
    assert metrics["mode"] == "finetune" and metrics["n"] == 3
    # n=3 at batch 5 is one step an epoch: min_steps 4 carries it past max_epochs 2
    assert (metrics["steps"], metrics["epochs"], metrics["stop_reason"]) == (4, 4, "min_steps")
    six = table[(table["mode"] == "scratch") & (table["n"] == 6)].iloc[0]
    assert (six["steps_mean"], six["epochs_mean"], six["stop_reasons"]) == (4, 2, "max_epochs")
    pre = table[table["mode"] == "finetune"]
    n_synthetic = json.loads((tiny_run / "results/tiny/shards/snap_c/manifest.json")
                             .read_text())["counts"]["train"]
    assert set(pre["n_pretrain"]) == {4, n_synthetic} and n_synthetic > 4
    k4 = torch.load(tiny_run / "results/tiny/pretrain/snap_c/k4/model.pt", weights_only=True)
    assert k4["meta"]["n_pretrain"] == 4
    assert (curves / "synthetic_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (curves / "forgetting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # forgetting: fine-tuned points are measured on their labeller's synthetic validation set
    # beside the model they started from; scratch has no synthetic data of its own
    assert metrics["synthetic_val_force_rmse"] > 0
    assert metrics["pretrained_synthetic_val_force_rmse"] > 0
    assert (pre["synthetic_val_force_rmse_mean"] > 0).all()
    assert table[table["mode"] == "scratch"]["synthetic_val_force_rmse_mean"].isna().all()
    assert set(pre["scratch_n_equivalent_force_how"]) <= {"interpolated", "extrapolated",
                                                          "not reached"}
    assert metrics["test_n_structures"] > 0 and metrics["test_energy_rmse_per_atom"] > 0
    stability = pd.read_csv(curves / "stability.csv")
    assert set(zip(stability["mode"], stability["labeller"], stability["n"].fillna(0))) == \
        combos | {("pretrain", "snap_c", 0), ("pretrain", "lcbop", 0), ("teacher", "snap_c", 0)}
    assert set(stability[stability["mode"] == "pretrain"]["pretrain_size"].astype(str)) == \
        {"4", "all"}
    assert stability["survival_fraction"].between(0, 1).all() and (stability["n_runs"] == 1).all()
    teacher = stability[stability["mode"] == "teacher"].iloc[0]
    assert teacher["survival_fraction"] == 1.0 and teacher["mean_time_survived_ps"] == 0.18
    assert (curves / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((tiny_run / "results/tiny/pretrain/lcbop/stability.json").read_text())
    assert run["point"] == "pretrain/lcbop" and run["teacher"] == "snap_c"
    assert run["protocol"]["hold_ps"] == 0.1 and run["runs"][0]["run"] == "start0-v1"
    frames = read_frames(tiny_run / "results/tiny/pretrain/lcbop/stability-frames.extxyz")
    assert len(frames) == run["runs"][0]["n_frames"]
    assert all("model_forces" in f.arrays for f in frames)
    parity = np.load(tiny_run / "results/tiny/finetune/snap_c/n3/s1/parity.npz")
    assert len(parity["energy_ref"]) == metrics["test_n_structures"]
    rmse = np.sqrt(np.mean((parity["forces_pred"] - parity["forces_ref"]) ** 2))
    assert rmse == pytest.approx(metrics["test_force_rmse"], rel=1e-9)


@pytest.mark.slow
def test_finished_stability_jobs_are_not_rerun(tiny_run):
    dry = snakemake(tiny_run, "-n", "--quiet", "rules")
    assert "Nothing to be done" in dry.stdout, dry.stdout


@pytest.mark.slow
def test_rerun_one_point_rebuilds_it_alone(tiny_run):
    point = tiny_run / "results/tiny/finetune/lcbop/n6/s1"
    (point / "model.pt").unlink()
    (point / "metrics.json").unlink()
    target = "results/tiny/finetune/lcbop/n6/s1/metrics.json"
    dry = snakemake(tiny_run, "-n", "--quiet", "rules", targets=(target,))
    assert "finetune" in dry.stdout and "evaluate" in dry.stdout
    for other in ("md", "label", "shard", "pretrain", "scratch", "aggregate"):
        assert f"\n{other} " not in dry.stdout, dry.stdout
    snakemake(tiny_run, "--cores", "2", targets=(target,))
    assert (point / "model.pt").exists()
    assert json.loads((point / "metrics.json").read_text())["n"] == 6


@pytest.mark.slow
def test_dry_run_lists_whole_dag(tiny_run):
    dag = snakemake(tiny_run, "--forceall", "-n", "--quiet", "rules").stdout
    for rule in ("md", "label", "shard", "real_data", "pretrain", "finetune", "scratch",
                 "evaluate", "aggregate", "stability_reference", "stability",
                 "stability_curves"):
        assert rule in dag
    graph = snakemake(tiny_run, "--forceall", "--rulegraph").stdout
    assert graph.lstrip().startswith("digraph") and "pretrain" in graph


@pytest.mark.parametrize("extra, message", [
    ({"stability": {"protocol": {"hold_ps": -1}}}, "-1 is less than or equal to the minimum of 0"),
    ({"stability": {"failure": {"speed": 3}}}, "'speed' was unexpected"),
    ({"stability": {"starts": {"source": "/no/starts.extxyz"}}},
     "start structures /no/starts.extxyz not found"),
    ({"synthetic": {"n_atoms": "many"}}, "'many' is not of type 'integer'"),
    ({"synthetic": {"teacher": "gap17"}}, "config field 'synthetic.teacher': unknown teacher 'gap17'"),
    ({"synthetic": {"labellers": ["snap_c", "nope"]}},
     "config field 'synthetic.labellers': unknown teacher 'nope'"),
    ({"synthetic": {"densities": [40.0]}}, "config field 'synthetic.densities'"),
    # random placement jams here (cells.MAX_PACKING); the old limit let it through to MD
    ({"synthetic": {"densities": [12.0]}}, "config field 'synthetic.densities'"),
    ({"finetune": {"seeds": [-1], "n_train": [3]}}, "-1 is less than the minimum of 0"),
    ({"finetune": {"seeds": [1], "n_train": [3, 500]}},
     "config field 'finetune.n_train' asks for [500] structures but the real training pool"),
    ({"finetune": {"seeds": [1], "n_train": [3], "max_epochs": "ten"}}, "'ten' is not of type"),
])
def test_bad_config_stops_before_any_job(tmp_path, real_like_file, extra, message):
    write_override(tmp_path, real_like_file, **extra)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_start_file_with_an_unknown_element_stops_before_any_job(tmp_path, real_like_file):
    cells = read_frames(real_like_file)[:2]
    cells[1].symbols[0] = "Si"
    write_frames(tmp_path / "starts.extxyz", cells)
    write_override(tmp_path, real_like_file,
                   stability={"starts": {"source": str(tmp_path / "starts.extxyz")}})
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert f"start structures {tmp_path / 'starts.extxyz'} (config field " \
        "'stability.starts.source'): structure 1 has element(s) ['Si']" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_real_data_is_named(tmp_path):
    write_override(tmp_path, tmp_path / "nowhere.extxyz")
    proc = snakemake(tmp_path, "--cores", "1", "-n", check=False)
    assert proc.returncode != 0
    assert "config field 'real.source': file" in proc.stdout + proc.stderr


def test_teacher_missing_from_this_lammps_warns_in_dry_run_and_stops_a_run(tmp_path,
                                                                           real_like_file):
    write_override(tmp_path, real_like_file, teachers={
        "gap17": {"pair_style": "quip", "pair_coeff": "* * /cluster/gap17.xml C",
                  "elements": ["C"]}}, synthetic={"labellers": ["snap_c", "gap17"]})
    dry = snakemake(tmp_path, "--cores", "1", "-n", check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "WARNING (a dry run goes on; a real run stops here): config field " \
        "'synthetic.labellers'" in dry.stdout + dry.stderr
    run = snakemake(tmp_path, "--cores", "1", check=False)
    assert run.returncode != 0
    assert "/cluster/gap17.xml" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_paper_config_dag_builds_here(tmp_path):
    """configs/paper-carbon.yaml: the paper's full study; its DAG builds without the
    cluster's potentials (a dry run only warns about them)."""
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--quiet", "rules", "--configfile",
         str(REPO / "configs" / "paper-carbon.yaml")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(line.split() for line in proc.stdout.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["md"] == "546" and counts["label"] == str(546 * 5)
    # 5 labellers x 4 synthetic sizes, each fine-tuned at 8 sizes n x 5 seeds
    assert counts["pretrain"] == str(5 * 4) and counts["scratch"] == str(8 * 5)
    assert counts["finetune"] == str(5 * 4 * 8 * 5) and counts["fetch_real"] == "1"
    assert counts["stability_starts"] == "1"  # quenched by the teacher, as in the paper
    assert "config field 'synthetic.teacher': teacher 'gap17'" in proc.stderr


@pytest.mark.slow
def test_replay_and_frozen_points_train_and_evaluate(tiny_run, tmp_path):
    """One replay and one frozen point of the tiny run, for real: replay trains on the
    structures its model was pre-trained on, frozen keeps the pre-trained layers (tiny has
    one interaction layer, so freeze_layers 1 leaves the readout), both measure forgetting."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    override = yaml.safe_load((run / "override.yaml").read_text())
    override["finetune"] = {"modes": ["finetune", "replay", "frozen"]}
    (run / "override.yaml").write_text(yaml.safe_dump(override))
    results = run / "results/tiny"
    targets = ("results/tiny/replay/lcbop/n3/s1/metrics.json",
               "results/tiny/frozen/snap_c/k4/n3/s1/metrics.json")
    snakemake(run, "--cores", "2", targets=targets)
    replay = torch.load(results / "replay/lcbop/n3/s1/model.pt", weights_only=True)["meta"]
    n_lcbop = json.loads((results / "shards/lcbop/manifest.json").read_text())["counts"]["train"]
    assert replay["stage"] == "replay" and replay["replay_structures"] == n_lcbop
    assert replay["settings"]["replay"] == {"fraction": 0.5, "weight": 0.3}
    frozen = torch.load(results / "frozen/snap_c/k4/n3/s1/model.pt", weights_only=True)
    init = torch.load(results / "pretrain/snap_c/k4/model.pt", weights_only=True)
    weights = [name for name, _ in NequIP.from_config(frozen["config"]).named_parameters()]
    assert weights[-2:] == ["head_1.weight", "head_2.weight"]
    for name in weights:
        unchanged = torch.equal(frozen["state_dict"][name], init["state_dict"][name])
        assert unchanged == (not name.startswith("head_")), name
    for target in targets:
        metrics = json.loads((run / target).read_text())
        assert metrics["mode"] in ("replay", "frozen") and metrics["test_force_rmse"] > 0
        assert metrics["synthetic_val_force_rmse"] > 0
        assert metrics["pretrained_synthetic_val_force_rmse"] > 0


def test_demo_sweep_plans_every_mode_and_size(tmp_path):
    """configs/demo-sweep.yaml: 2 synthetic sizes x 3 fine-tuning modes x 2 n x 2 seeds, plus
    scratch at 2 n x 2 seeds."""
    write_override(tmp_path, REPO / "data/demo/carbon-dft.extxyz")
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--quiet", "rules", "--configfile",
         str(REPO / "config.yaml"), str(REPO / "configs/demo-sweep.yaml"),
         str(tmp_path / "override.yaml")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert {rule: counts[rule] for rule in ("pretrain", "finetune", "replay", "frozen",
                                            "scratch", "evaluate", "stability")} == \
        {"pretrain": 2, "finetune": 8, "replay": 8, "frozen": 8, "scratch": 4, "evaluate": 28,
         "stability": 30}


def test_report_builds_with_learning_curves(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    for name in ("learning_curve.svg", "parity.png", "datasets.csv", "wall_times.csv",
                 "stability.svg", "stability.csv", "synthetic_size.png", "forgetting.png"):
        assert name in html, name
    # the report opens on the workflow's rule graph (Snakemake draws it; no Graphviz needed)
    spec = json.loads(re.search(r"var rulegraph_spec = (\{.*?\});\s*</script>", html,
                                re.DOTALL).group(1))
    rules = {node["rule"] for node in spec["data"][0]["values"]}
    assert {"md", "label", "shard", "pretrain", "finetune", "scratch", "evaluate", "aggregate",
            "stability", "stability_curves"} <= rules


@pytest.mark.slow
def test_dft_stage_labels_batches_into_the_real_data(tmp_path):
    """real.source: dft:<structures> labels them with GPAW, one job per batch, and the real
    data stage reads the batches in order; a rerun of a deleted batch reuses the cache."""
    pytest.importorskip("gpaw")
    from ase.build import bulk

    from defaults import dft_settings
    from synthpre.dft import compute_energy_forces, isolated_atom_energy
    from synthpre.frames import write_frames

    frames = []
    for i in range(7):
        atoms = bulk("C", "diamond", a=3.57)
        atoms.positions[1] += [0.02 * i, 0.03, -0.01 * i]
        frames.append(atoms)
    write_frames(tmp_path / "structures.extxyz", frames)
    dft = {"batch_size": 3, "settings": {"ecut_eV": 250}}
    write_override(tmp_path, f"dft:{tmp_path / 'structures.extxyz'}", dft=dft,
                   finetune={"n_train": [2], "seeds": [1]})
    target = ("results/tiny/real/summary.json",)
    snakemake(tmp_path, "--cores", "2", targets=target)
    batches = sorted((tmp_path / "results/tiny/dft").glob("batch*.extxyz"))
    assert [b.name for b in batches] == ["batch0.extxyz", "batch1.extxyz", "batch2.extxyz"]
    labelled = [a for b in batches for a in read_frames(b)]
    assert len(labelled) == 7
    settings = dft_settings(**dft["settings"])  # the rest from the schema, as the jobs got
    e0 = isolated_atom_energy("C", settings)
    energy, forces = compute_energy_forces(frames[4], settings)
    assert labelled[4].info["energy"] == pytest.approx(energy - 2 * e0, abs=1e-6)
    np.testing.assert_allclose(labelled[4].arrays["forces"], forces, atol=1e-6)
    summary = json.loads((tmp_path / "results/tiny/real/summary.json").read_text())
    assert summary["n_test"] + summary["n_val"] + summary["n_pool"] == 7
    assert summary["e0"]["C"] == pytest.approx(e0)
    batches[1].unlink()
    snakemake(tmp_path, "--cores", "1", targets=(str(batches[1].relative_to(tmp_path)),))
    assert "cached" in (tmp_path / "results/tiny/logs/dft/batch1.log").read_text()


@pytest.mark.slow
def test_long_jobs_log_where_they_are(tiny_run):
    """Rule logs say where a job is: MD stage and progress lines (step, time, T, energy per
    atom, atom-steps/s, ETA) and one line per training epoch (loss, val E and F, lr, time)."""
    import re

    logs = tiny_run / "results/tiny/logs"
    md_log = next((logs / "md").rglob("*.log")).read_text()
    assert re.search(r"stage melt, [\d.]+ -> [\d.]+ K, \d+ steps", md_log)
    progress = re.findall(r"md \S+: (\d+)/(\d+) steps \(([\d.]+) steps/s, ETA (\d+) s\), t "
                          r"([\d.]+) ps, T (\d+) K, E_pot (-?[\d.]+) eV/atom, (\d+) atom-steps/s",
                          md_log)
    assert progress and progress[-1][0] == progress[-1][1]  # the last line: all steps done
    assert float(progress[-1][6]) < 0 and int(progress[-1][7]) > 0
    epochs = re.findall(r"epoch (\d+), train loss ([\d.e+-]+), val E ([\d.e+-]+) eV/atom, "
                        r"val F ([\d.e+-]+) eV/Å, lr ([\d.e+-]+), ([\d.]+) s/epoch",
                        (logs / "scratch/n3/s1.log").read_text())
    assert [int(e[0]) for e in epochs] == list(range(1, len(epochs) + 1)) and len(epochs) >= 2
    assert all(float(e[3]) > 0 and float(e[4]) > 0 for e in epochs)
