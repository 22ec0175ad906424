"""What the stability tests share: a short protocol's settings (as a job gets them) and a tiny
random model, broken on request."""
from __future__ import annotations

import copy

from defaults import model_config

from synthpre.model import NequIP
from synthpre.modelfile import save_model
from synthpre.stability.settings import StabilitySettings

STABILITY = {
    "starts": {"source": "test", "count": 2, "density_min": 1.8, "density_max": 2.4},
    "velocity_seeds": [1],
    "protocol": {"T_initial": 300, "T_anneal": 3000, "warmup_ps": 0.2, "hold_ps": 0.3,
                 "nve_ps": 0.1, "timestep_fs": 1.0, "tdamp_fs": 100.0, "dump_every_ps": 0.05},
    "failure": {"check_every_fs": 10, "min_distance": 0.7, "max_force": 30.0,
                "max_temperature_factor": 2.0, "close_pair_factor": 0.45,
                "unphysical_factor": 2.0},
    "analysis": {"relabel_frames": 4, "coordination_cutoff": 1.85, "rdf_r_max": 4.0,
                 "rdf_bins": 40, "coordination_factor": 1.25},
}
CFG = StabilitySettings.from_config(STABILITY)
TINY_MODEL = {"r_max": 4.0, "num_layers": 1, "num_features": 4, "l_max": 1, "num_basis": 4,
              "species": ["C"]}


def job_settings(teacher="lcbop", **stability):
    s = copy.deepcopy(STABILITY)
    for key, value in stability.items():
        s[key] = {**s[key], **value} if isinstance(value, dict) else value
    return {"stability": s, "elements": ["C"], "teacher": teacher, "teachers": {}}


def save_tiny_model(path, scale=1.0):
    """A tiny random NequIP; ``scale`` multiplies its energies and forces (a broken model)."""
    import torch

    torch.manual_seed(0)
    model = NequIP.from_config(model_config(**TINY_MODEL))
    model.scale.fill_(scale)
    save_model(path, model, {"e0": {"C": 0.0}})
    return path
