"""One source per default: the config schema. A config that leaves a field out gets the
schema's value in every stage; the CLI takes the pipeline's YAML as its rules would; every
trainer option is settable from the config and takes effect."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from defaults import DEFAULTS, MINIMAL, train_config
from test_trainer import carbon_records, tiny_model

from snakemake_run import REPO, SNAKEMAKE
from synthpre import job_settings
from synthpre.config import complete, load_config
from synthpre.config_check import ConfigError, check_config
from synthpre.trainer import train

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def test_a_missing_min_distance_gets_the_schemas_value_in_every_stage(tmp_path):
    schema_value = SCHEMA["properties"]["synthetic"]["properties"]["min_distance"]["default"]
    config = complete(MINIMAL)
    assert "min_distance" not in MINIMAL["synthetic"]
    assert job_settings.md(config, "lcbop")["min_distance"] == schema_value
    # the config check uses the same value: a density that packs at 1.0 Å but not at 1.4 Å
    dense = {**MINIMAL, "synthetic": {**MINIMAL["synthetic"], "densities": [6.0]},
             "real": {"source": str(REPO / "data/demo/carbon-dft.extxyz")}}
    check_config(complete(dense), read_data=False)
    with pytest.raises(ConfigError, match="min_distance 1.4"):
        check_config(complete({**dense, "synthetic": {**dense["synthetic"], "min_distance": 1.4}}),
                     read_data=False)
    # Snakemake's validate fills the same defaults: fields config.yaml leaves out reach jobs
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(
        {"real": {"source": str(REPO / "data/demo/carbon-dft.extxyz")}}))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "-p", "--configfile",
                           str(REPO / "configs/tiny.yaml"),
                           str(tmp_path / "override.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    jobs = [json.loads(s) for s in re.findall(r"train --settings '(\{.*?\})' ", proc.stdout)]
    assert jobs and all(j["model"]["radial_mlp_width"] == 8 and j["train"]["lr_factor"] == 0.5
                        for j in jobs)


def test_every_training_option_has_a_schema_default_and_reaches_the_job():
    train_defaults = SCHEMA["properties"]["train"]["properties"]
    assert set(train_defaults) == {*job_settings.TRAIN_FIELDS, *job_settings.RUN_FIELDS["train"]}
    assert all("default" in v for v in train_defaults.values())
    settings = job_settings.train(complete({**MINIMAL, "train": {"lr_factor": 0.2,
                                                                 "lr_patience": 3}}), "finetune")
    assert settings["train"]["lr_factor"] == 0.2 and settings["train"]["lr_patience"] == 3
    # the paper's architecture by default; compiling is how it runs, not part of it
    assert settings["model"] == {k: v for k, v in DEFAULTS["model"].items() if k != "compile"}
    with pytest.raises(Exception, match="lr_facter"):  # a typo is refused, not ignored
        complete({**MINIMAL, "train": {"lr_facter": 0.2}})


def test_lr_factor_and_patience_take_effect(tmp_path):
    """The plateau schedule: at a tiny learning rate the validation error never improves, so
    with lr_patience 0 every epoch after the first multiplies the learning rate by lr_factor,
    and with lr_patience 100 none does."""
    train_recs, val_recs = carbon_records(3, 2), carbon_records(2, 3)
    histories = {}
    for factor, patience in ((0.5, 0), (0.1, 0), (0.1, 100)):
        cfg = train_config(max_epochs=4, batch_size=3, lr=1e-5, lr_factor=factor,
                           lr_patience=patience, patience=1000)
        train(tiny_model(train_recs), train_recs, val_recs, cfg,
              tmp_path / f"{factor}-{patience}")
        histories[factor, patience] = _lrs(tmp_path / f"{factor}-{patience}")
    assert histories[0.5, 0] == pytest.approx([1e-5 * 0.5 ** k for k in range(4)], rel=1e-6)
    assert histories[0.1, 0] == pytest.approx([1e-5 * 0.1 ** k for k in range(4)], rel=1e-6)
    assert histories[0.1, 100] == pytest.approx([1e-5] * 4)


def _lrs(workdir) -> list[float]:
    import csv
    with open(workdir / "metrics.csv") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


def test_a_stage_runs_by_hand_from_the_yaml_config(tmp_path):
    """`synthpre real-data --configfile` gives what the rule's `--settings` JSON gives."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"real": {"source": str(REPO / "data/demo/carbon-dft.extxyz"),
                                                 "test_fraction": 0.3}}))
    config = load_config(str(REPO / "config.yaml"), str(override))
    assert config["real"]["test_fraction"] == 0.3 and config["real"]["split_seed"] == 0
    outs = {}
    for how, args in (("yaml", ["--configfile", str(REPO / "config.yaml"), str(override)]),
                      ("json", ["--settings", job_settings.as_json(job_settings.real(config))])):
        proc = subprocess.run([sys.executable, "-m", "synthpre", "real-data", *args, "--source",
                               config["real"]["source"], "--out-dir", str(tmp_path / how)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs[how] = json.loads((tmp_path / how / "summary.json").read_text())
    assert outs["yaml"] == outs["json"]
    assert outs["yaml"]["n_test"] > 0


def test_how_a_training_runs_is_not_part_of_its_settings():
    """model.compile, train.loader_workers and train.tensorboard change the float rounding or
    the speed, not the result: they reach the job beside its settings, so changing one neither
    reruns a finished training (its params, tests/test_reruns.py) nor refuses a checkpoint
    (whose fingerprint holds the settings)."""
    config = complete(MINIMAL)
    changed = complete({**MINIMAL, "model": {"compile": not config["model"]["compile"]},
                        "train": {"loader_workers": 2, "tensorboard": True}})
    for stage in ("pretrain", "finetune", "replay", "frozen", "scratch"):
        assert job_settings.train(config, stage) == job_settings.train(changed, stage)
        assert job_settings.train_run_options(changed, stage) == {
            "compile": not config["model"]["compile"], "loader_workers": 2, "tensorboard": True,
            "capture": config["train"]["capture"]}


def _dry_run(workdir, *configs, extra=()):
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "-p", *extra,
                           *(["--configfile", *map(str, configs)] if configs else [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _job_settings(stdout, command):
    return [json.loads(s) for s in re.findall(rf"{command} --settings '(\{{.*?\}})' ", stdout)]


def test_a_config_given_alone_gets_the_schemas_defaults_not_the_demos(tmp_path):
    """`--configfile mine.yaml` without config.yaml: no dimer exclusion, the schema's
    min_steps and model, and, without `run`, results named after the file (not results/demo)."""
    mine = {k: v for k, v in MINIMAL.items() if k != "run"}
    mine["real"] = {"source": str(REPO / "data/demo/carbon-dft.extxyz")}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    out = _dry_run(tmp_path, tmp_path / "mine.yaml")
    assert "results/mine/" in out and "results/demo" not in out
    (real,) = _job_settings(out, "real-data")
    assert real["real"]["exclude_config_types"] == []
    trainings = _job_settings(out, "train")
    assert trainings and all(j["model"]["num_layers"] == DEFAULTS["model"]["num_layers"] and
                             j["model"]["num_features"] == DEFAULTS["model"]["num_features"]
                             for j in trainings)
    assert all(j["train"]["min_steps"] == DEFAULTS["finetune"].get("min_steps",
                                                                   DEFAULTS["train"]["min_steps"])
               for j in trainings)
    # the same by hand: `synthpre <stage> --configfile` reads the given file(s) only
    config = load_config(str(tmp_path / "mine.yaml"))
    assert config["run"] == "mine" and config["real"]["exclude_config_types"] == []
    assert job_settings.train(config, "finetune")["train"]["min_steps"] == 0


def test_the_demo_runs_when_no_config_is_given(tmp_path):
    """The README's plain command still gets config.yaml (found beside the Snakefile)."""
    (tmp_path / "data").symlink_to(REPO / "data")
    out = _dry_run(tmp_path)
    assert "results/demo/" in out
    (real,) = _job_settings(out, "real-data")
    assert real["real"]["exclude_config_types"] == ["dimer"]


def test_shipped_configs_alone_mean_what_they_meant_on_top_of_the_demo():
    """tiny and lisi were read on top of config.yaml; alone they give every job the same
    settings (paper-carbon is meant to differ: it took the demo's epoch limits by accident)."""
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    for name in ("tiny", "lisi"):
        path = REPO / "configs" / f"{name}.yaml"
        alone = load_config(str(path))
        on_demo = load_config(str(REPO / "config.yaml"), str(path))
        assert on_demo["run"] == alone["run"] == name and demo["run"] == "demo"
        for stage in ("pretrain", "finetune", "replay", "frozen", "scratch"):
            assert job_settings.train(alone, stage) == job_settings.train(on_demo, stage), stage
        for section in ("real", "synthetic", "model", "stability", "dft", "teachers"):
            assert alone[section] == on_demo[section], (name, section)
    assert load_config(str(REPO / "configs/tiny.yaml")) == \
        load_config(str(REPO / "config.yaml"), str(REPO / "configs/tiny.yaml"))


def test_a_config_without_run_never_writes_into_another_studys_folder(tmp_path):
    """Two studies without `run` get their own folders; an explicit `run` wins."""
    base = {k: v for k, v in MINIMAL.items() if k != "run"}
    for name in ("silicon-a", "silicon-b"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(base))
    assert load_config(str(tmp_path / "silicon-a.yaml"))["run"] == "silicon-a"
    assert load_config(str(tmp_path / "silicon-b.yaml"))["run"] == "silicon-b"
    (tmp_path / "named.yaml").write_text(yaml.safe_dump({**base, "run": "mine"}))
    assert load_config(str(tmp_path / "named.yaml"), str(tmp_path / "silicon-a.yaml"))["run"] \
        == "mine"


def _carbon_structures(path, n):
    """n unlabelled carbon cells (a dft: structures file), from the demo's DFT data."""
    import ase.io

    frames = ase.io.read(REPO / "data/demo/carbon-dft.extxyz", index=f":{n}")
    for atoms in frames:
        atoms.calc = None
        atoms.info = {"config_type": atoms.info.get("config_type", "bulk")}
        atoms.arrays.pop("forces", None)
    ase.io.write(path, frames, format="extxyz")


def test_dft_source_with_n_train_beyond_its_pool_stops_before_any_job(tmp_path):
    """12 structures: 2 test, 1 validation, a pool of 9; n_train 10 is refused at parse time,
    naming the field, before any DFT job (the README's promise, now for dft: too)."""
    _carbon_structures(tmp_path / "structures.extxyz", 12)
    config = complete({**MINIMAL, "real": {"source": f"dft:{tmp_path}/structures.extxyz"},
                       "finetune": {"n_train": [4, 10], "seeds": [1]}})
    with pytest.raises(ConfigError, match=r"'finetune.n_train' asks for \[10\] structures but "
                                          r"the real training pool has only 9"):
        check_config(config)
    check_config(complete({**config, "finetune": {"n_train": [9], "seeds": [1]}}))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--configfile",
                           str(tmp_path / "mine.yaml")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "'finetune.n_train' asks for [10]" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_the_validation_set_size_is_a_config_field_with_a_warning_below_five(tmp_path):
    from synthpre.config_check import config_warnings
    from synthpre.real_data import ingest, val_count

    schema = SCHEMA["properties"]["real"]["properties"]
    # the paper's min(10 %, 100), from the schema's values
    assert [val_count(n, schema["val_fraction"]["default"], schema["val_max"]["default"])
            for n in (4, 50, 400, 5000)] == [1, 5, 40, 100]
    _carbon_structures(tmp_path / "structures.extxyz", 12)
    config = complete({**MINIMAL, "real": {"source": f"dft:{tmp_path}/structures.extxyz"}})
    (warning,) = config_warnings(config)
    assert "'real.val_fraction': 1 validation structure(s) (fewer than 5)" in warning
    wider = complete({**config, "real": {**config["real"], "val_fraction": 0.5}})
    assert config_warnings(wider) == []
    summary = ingest(str(REPO / "data/demo/carbon-dft.extxyz"), str(tmp_path / "real"), ["C"],
                     exclude_config_types=["dimer"], val_fraction=0.25, val_max=20)
    assert summary["n_val"] == 20 and summary["n_test"] + summary["n_pool"] + 20 == 160


def test_the_silicon_example_plans_its_study_with_silicon_settings(tmp_path):
    """configs/silicon.yaml alone (a dry run, nothing computed): SNAP and SW from the wheel,
    20 Si8 cells labelled by two DFT jobs, stability from teacher-quenched 64-atom cells with
    Si-Si thresholds, not carbon's; an n_train beyond its 12-cell pool stops before any job."""
    from synthpre.stability.settings import StabilitySettings

    (tmp_path / "data").symlink_to(REPO / "data")
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--quiet", "rules",
                           "--configfile", str(REPO / "configs/silicon.yaml")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert {k: counts[k] for k in ("dft", "md", "label", "pretrain", "finetune", "scratch",
                                   "evaluate_pretrained", "stability_starts")} == \
        {"dft": 2, "md": 4, "label": 8, "pretrain": 2, "finetune": 8, "scratch": 4,
         "evaluate_pretrained": 4, "stability_starts": 1}
    assert "config field 'stability.starts'" not in proc.stderr  # 64-atom starts: no warning
    config = load_config(str(REPO / "configs/silicon.yaml"))
    cfg = StabilitySettings.from_config(config["stability"], config["elements"])
    assert cfg.failure.min_distance == {"Si-Si": 1.0}
    assert cfg.analysis.coordination_cutoff == {"Si-Si": 2.78}
    assert config["real"]["exclude_config_types"] == [] and config["run"] == "silicon"
    too_many = tmp_path / "more.yaml"
    too_many.write_text(yaml.safe_dump({"finetune": {"n_train": [4, 13]}}))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--configfile",
                           str(REPO / "configs/silicon.yaml"), str(too_many)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "'finetune.n_train' asks for [13] structures but the real training pool has only " \
           "12" in proc.stdout + proc.stderr


def test_freezing_more_layers_than_the_schemas_default_model_has_stops_the_run():
    # model.num_layers left out: the schema's default (4) is the model the job would build.
    def frozen(layers):
        return complete({**MINIMAL, "real": {"source": str(REPO / "data/demo/carbon-dft.extxyz")},
                         "finetune": {**MINIMAL["finetune"], "modes": ["frozen"],
                                      "freeze_layers": layers}})
    assert frozen(5)["model"]["num_layers"] == 4
    with pytest.raises(ConfigError, match="'finetune.freeze_layers' is 5 but model.num_layers is 4"):
        check_config(frozen(5), read_data=False)
    check_config(frozen(4), read_data=False)
