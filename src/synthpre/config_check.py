"""Checks on a validated config that a JSON schema cannot express, run when the Snakefile is
parsed, so bad input stops the run before any job starts, naming the config field."""
from __future__ import annotations

import os

from .cells import check_packing
from .teachers import get_teacher


class ConfigError(ValueError):
    pass


def md_jobs(synthetic: dict) -> list[str]:
    """Job names of the MD fan-out: density x anneal temperature x replica."""
    return [f"d{d:g}-T{t:g}-r{r}" for d in synthetic["densities"]
            for t in synthetic["anneal_temperatures"] for r in range(synthetic["replicas"])]


def parse_job(job: str) -> tuple[float, float, int]:
    d, t, r = job.split("-")
    return float(d[1:]), float(t[1:]), int(r[1:])


def check_config(config: dict) -> None:
    syn, custom = config["synthetic"], config.get("teachers", {})
    elements = config["elements"]
    for field, names in (("synthetic.teacher", [syn["teacher"]]),
                         ("synthetic.labellers", syn["labellers"])):
        for name in names:
            try:
                teacher = get_teacher(name, custom)
                teacher.commands(elements)  # raises if an element is not covered
                teacher.check()  # pair style in this LAMMPS build, potential files exist
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError(f"config field '{field}': {err}") from None
    if len(elements) != 1:
        raise ConfigError("config field 'elements': random cells are single-element for now")
    min_d = syn.get("min_distance", 1.0)
    for density in syn["densities"]:
        try:
            check_packing(elements * syn["n_atoms"], density, min_d)
        except ValueError as err:
            raise ConfigError(f"config field 'synthetic.densities': {err}") from None
    if not os.path.exists(config["real"]["path"]):
        raise ConfigError(f"config field 'real.path': file {config['real']['path']} not found")
