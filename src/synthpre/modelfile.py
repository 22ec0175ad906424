"""Model files: everything needed to rebuild a trained model, and nothing else.

``model.pt`` holds ``{"config", "state_dict", "species", "e0", "meta"}`` (see
docs/architecture.md): the model is rebuilt from ``config`` alone, so a file outlives the
training run that wrote it. ``e0`` are the isolated-atom energies of the data the model was
last trained on, which the ASE calculator adds back to give total energies.
"""
from __future__ import annotations

import os

import torch

from .atomic import atomic_path
from .model import NequIP


MODEL_KEYS = ("config", "state_dict", "species", "e0", "meta")


def save_model(path: str | os.PathLike, model: NequIP, meta: dict) -> None:
    """Write atomically; ``meta`` should carry ``e0`` ({symbol: eV}) and a data reference."""
    payload = {
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "species": list(model.species),
        "e0": {k: float(v) for k, v in meta.get("e0", {}).items()},
        "meta": dict(meta),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike, device="cpu") -> tuple[NequIP, dict]:
    """Rebuild the model from its stored config; returns (model in eval mode, meta)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        missing = sorted(set(MODEL_KEYS) - set(payload if isinstance(payload, dict) else ()))
        if missing:
            raise KeyError(f"missing {missing}")
        model = NequIP.from_config(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # torch raises EOFError, RuntimeError, UnpicklingError, ...
        raise ValueError(f"{path}: not a readable synthpre model file ({type(err).__name__}: "
                         f"{err}); expected a torch file with config, state_dict, species, e0 "
                         f"and meta, as `synthpre train` writes") from err
    meta = {**payload["meta"], "e0": payload["e0"]}
    return model.to(device).eval(), meta
