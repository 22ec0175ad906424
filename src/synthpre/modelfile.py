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
from .provenance import code_version


MODEL_KEYS = ("config", "state_dict", "species", "e0", "meta")


def save_model(path: str | os.PathLike, model: NequIP, meta: dict) -> None:
    """Write atomically; ``meta`` should carry ``e0`` ({symbol: eV}) and a data reference."""
    payload = {
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "species": list(model.species),
        "e0": {k: float(v) for k, v in meta.get("e0", {}).items()},
        "meta": {"code_version": code_version(), **meta},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike, device="cpu",
               kernel: str | None = None,
               compile: bool | None = None) -> tuple[NequIP, dict]:
    """Rebuild the model from its stored config; returns (model in eval mode, meta).

    ``kernel`` evaluates the same weights with another convolution kernel (the stored one,
    or ``fast`` for files written before kernels were selectable, when None); ``compile``
    likewise overrides whether the fast kernel runs through torch.compile (files written
    before the option run it eagerly). A file that is not a model of this pipeline raises
    ValueError naming it.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a pickle of something else, not torch at all
        reason = str(err).split(". ")[0]
        raise ValueError(f"{path}: not a readable synthpre model file "
                         f"({type(err).__name__}: {reason})") from err
    missing = sorted(set(MODEL_KEYS) - set(payload if isinstance(payload, dict) else ()))
    if missing:
        raise ValueError(f"{path}: not a synthpre model file (no {', '.join(missing)})")
    # files from before kernels and compilation were selectable ran the fast kernel eagerly
    overrides = {key: value for key, value in (("kernel", kernel), ("compile", compile))
                 if value is not None}
    config = {"kernel": "fast", "compile": False, **payload["config"], **overrides}
    try:
        model = NequIP.from_config(config)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # written by another model version
        raise ValueError(f"{path}: the stored weights do not fit its model config "
                         f"({str(err).splitlines()[0]})") from err
    meta = {**payload["meta"], "e0": payload["e0"]}
    return model.to(device).eval(), meta
