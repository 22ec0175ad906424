"""Checks on a validated config that a JSON schema cannot express, run when the Snakefile is
parsed, so bad input stops the run before any job starts, naming the config field.

Checks of this machine's LAMMPS (a pair style in this build, a potential file on disk)
are returned rather than raised: the Snakefile warns of them when it is parsed and stops in
``onstart`` (which a dry run skips), so a cluster config shows its DAG on a laptop without the
cluster's LAMMPS build or data, and still stops before any job is submitted."""
from __future__ import annotations

import os
import re
import zlib

from .cells import cell_composition, check_packing
from .real_data import check_sizes, read_real
from .teachers import get_teacher


FETCH_PREFIX = "load-atoms:"
DFT_PREFIX = "dft:"


class ConfigError(ValueError):
    pass


# Names that become folders, wildcards and command-line words; the schema's
# definitions.name.pattern (tests/test_hostile.py checks they agree).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def check_names(config: dict) -> None:
    """Every name that becomes a path or a wildcard matches NAME_PATTERN, named by its field
    (the schema says so too; this also guards configs handed to the library directly)."""
    fields = [("run", config.get("run"))]
    fields += [("teachers", name) for name in (config.get("teachers") or {})]
    syn = config.get("synthetic") or {}
    fields += [("synthetic.teacher", syn.get("teacher"))]
    fields += [("synthetic.labellers", name) for name in syn.get("labellers") or []]
    for field, name in fields:
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"config field '{field}': name {name!r} does not match "
                              f"{NAME_PATTERN} (letters, digits, '_', '.', '-'; it becomes a "
                              f"folder and a command-line word)")


def md_jobs(synthetic: dict) -> list[str]:
    """Job names of the MD fan-out: density x anneal temperature x replica."""
    return [f"d{d:g}-T{t:g}-r{r}" for d in synthetic["densities"]
            for t in synthetic["anneal_temperatures"] for r in range(synthetic["replicas"])]


def job_seed(job: str, base_seed: int) -> int:
    """A trajectory's seed: fixed by its name and the config's seed, so reruns repeat it."""
    return base_seed * 1_000_003 + zlib.crc32(job.encode()) % 1_000_000


def count_frames(path: str) -> int:
    """Structures in an extxyz file (to fan out one job per batch)."""
    import ase.io

    return sum(1 for _ in ase.io.iread(path, format="extxyz"))


def parse_job(job: str) -> tuple[float, float, int]:
    d, t, r = job.split("-")
    return float(d[1:]), float(t[1:]), int(r[1:])


def check_config(config: dict, read_data: bool = True) -> list[str]:
    """Raise ConfigError for bad input; return the problems of this LAMMPS (see above).
    ``read_data``: also read the real-data file (once, in Snakemake's main process)."""
    check_names(config)
    syn, custom = config["synthetic"], config.get("teachers", {})
    elements = config["elements"]
    machine: list[str] = []
    for field, names in (("synthetic.teacher", [syn["teacher"]]),
                         ("synthetic.labellers", syn["labellers"])):
        for name in names:
            try:
                teacher = get_teacher(name, custom)
                teacher.commands(elements)  # raises if an element is not covered
            except ValueError as err:
                message = str(err)
                raise ConfigError(message if message.startswith("config field") else
                                  f"config field '{field}': {message}") from None
            try:
                teacher.check()  # pair style in this LAMMPS build, potential files exist
            except (ValueError, FileNotFoundError) as err:
                machine.append(f"config field '{field}': {err}")
    try:
        counts = cell_composition(elements, syn["n_atoms"], syn.get("composition"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    symbols = [s for s, n in counts.items() for _ in range(n)]
    for density in syn["densities"]:
        try:
            check_packing(symbols, density, syn["min_distance"])
        except ValueError as err:
            raise ConfigError(f"config field 'synthetic.densities': {err}") from None
    check_freeze_layers(config)
    source = config["real"]["source"]
    path = source.removeprefix(DFT_PREFIX)
    if not source.startswith(FETCH_PREFIX) and not os.path.exists(path):
        raise ConfigError(f"config field 'real.source': file {path} not found")
    if read_data and not source.startswith((FETCH_PREFIX, DFT_PREFIX)):
        check_real_data(config)
    return machine


def check_freeze_layers(config: dict) -> None:
    """Frozen fine-tuning cannot freeze more interaction layers than the model has."""
    ft = config["finetune"]
    if "frozen" not in ft["modes"] or ft["freeze_layers"] == "all":
        return
    layers = config["model"].get("num_layers")
    if layers is None:
        from .model import DEFAULT_CONFIG  # torch and e3nn: only when the config lacks it
        layers = DEFAULT_CONFIG["num_layers"]
    if ft["freeze_layers"] > layers:
        raise ConfigError(f"config field 'finetune.freeze_layers' is {ft['freeze_layers']} but "
                          f"model.num_layers is {layers}; use at most {layers}, or 'all'")


def check_real_data(config: dict) -> None:
    """Read a real-data file once, as the real_data job will, so bad content or a training
    pool smaller than the largest ``finetune.n_train`` stops the run before MD starts."""
    real = {k: v for k, v in config["real"].items() if k != "source"}
    try:
        _, (_, _, pool), _ = read_real([config["real"]["source"]], config["elements"], **real)
        check_sizes(len(pool), config["finetune"]["n_train"])
    except ValueError as err:
        message = str(err)
        raise ConfigError(message if message.startswith("config field") else
                          f"config field 'real.source': {message}") from None
