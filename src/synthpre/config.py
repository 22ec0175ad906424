"""The pipeline config as every stage sees it: YAML validated against the schema, which fills
in every default (``workflow/schemas/config.schema.yaml`` is the one place defaults live).

Snakemake validates the same way (``validate`` in the Snakefile); this lets a stage run by hand
with ``synthpre <stage> --configfile config.yaml`` get exactly the settings its rule would pass.

A config stands alone: ``--configfile mine.yaml`` gets the schema's defaults and nothing of the
carbon demo (``config.yaml`` is read only when no config file is given, by the Snakefile), so a
new chemistry does not silently inherit carbon's exclusions, model size or stability settings.
A config without ``run`` is named after its (last) file, ``configs/mine.yaml`` -> ``mine``, so
it cannot write into another study's ``results/<run>/`` (see :func:`name_run`).
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
    name_run(config, paths)
    return complete(config)


def name_run(config: dict, configfiles) -> dict:
    """Give a config without ``run`` the name of its last config file (``configs/si.yaml``
    -> ``si``), in place: results go to ``results/<that name>/``, never to the demo's or
    another study's folder. A config given without any file (``--config`` alone) must name
    its run itself; the schema then refuses it, naming the field."""
    if "run" not in config and configfiles:
        config["run"] = Path(str(list(configfiles)[-1])).stem
    return config


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
