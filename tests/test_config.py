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
                           str(REPO / "config.yaml"), str(REPO / "configs/tiny.yaml"),
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
