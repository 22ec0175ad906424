"""Settings objects with the config schema's defaults, the one place defaults live: tests
override single fields as a config would."""
from __future__ import annotations

import json

from synthpre.config import complete
from synthpre.dft import DFTSettings
from synthpre.md import Protocol
from synthpre.trainer import TrainConfig

# The fields the schema requires; everything else comes from its defaults.
MINIMAL = {
    "run": "test", "elements": ["C"],
    "synthetic": {"teacher": "lcbop", "labellers": ["lcbop"], "n_atoms": 8, "densities": [2.0],
                  "anneal_temperatures": [3000], "replicas": 1,
                  "protocol": {"stages": [{"name": "hold", "T_start": 3000, "T_end": 3000,
                                           "duration_ps": 0.1}]}},
    "real": {"source": "real.extxyz"},
    "finetune": {"n_train": [1], "seeds": [0]},
}
DEFAULTS = complete(MINIMAL)


def train_config(**override) -> TrainConfig:
    return TrainConfig(**{**DEFAULTS["train"], "device": "cpu", **override})


def model_config(**override) -> dict:
    """A whole model definition (as a training job builds it); species C unless overridden.
    Eager unless a test asks for ``compile``: compiling costs seconds per model, and
    tests/test_kernels.py checks the compiled kernel against the reference."""
    return {**DEFAULTS["model"], "species": ["C"], "avg_num_neighbors": 10.0, "compile": False,
            **override}


def protocol(**override) -> Protocol:
    return Protocol.from_config({**DEFAULTS["synthetic"]["protocol"], **override})


def dft_settings(**override) -> DFTSettings:
    return DFTSettings.from_config({**DEFAULTS["dft"]["settings"], **override})


def train_settings(stage: str, model: dict | None = None, train: dict | None = None,
                   fit_shift: bool = False) -> dict:
    """The settings slice a training rule passes (``synthpre.job_settings.train``)."""
    from synthpre import job_settings

    config = {**DEFAULTS, "model": {**DEFAULTS["model"], "compile": False, **(model or {})},
              "train": {**DEFAULTS["train"], **(train or {})},
              "finetune": {**DEFAULTS["finetune"], "fit_shift": fit_shift}}
    return job_settings.train(config, stage)


def run_options(**override) -> str:
    """``--run-options`` of a training command (``job_settings.train_run_options``): the eager
    kernel and step (compiling costs seconds per process), no TensorBoard, graphs on the
    training thread."""
    return json.dumps({"compile": False, "tensorboard": False, "loader_workers": 0,
                       "capture": False, **override})
