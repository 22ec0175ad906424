"""The pipeline config as every stage sees it: YAML validated against the schema, which fills
in every default (``workflow/schemas/config.schema.yaml`` is the one place defaults live).

Snakemake validates the same way (``validate`` in the Snakefile); this lets a stage run by hand
with ``synthpre <stage> --configfile config.yaml`` get exactly the settings its rule would pass.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def complete(config: dict) -> dict:
    """A validated copy of ``config`` with the schema's defaults filled in."""
    from snakemake.utils import validate  # Snakemake's own validator: the same defaults

    if not SCHEMA.exists():
        raise FileNotFoundError(f"config schema {SCHEMA} not found (run synthpre from a "
                                f"checkout of the repository)")
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA), set_default=True)
    return config


def load_config(*paths: str) -> dict:
    """YAML config file(s), later ones overriding earlier ones section by section (as
    Snakemake's ``--configfile a b``), validated and completed."""
    config: dict = {}
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"config file {path} not found")
        _merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return complete(config)


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
