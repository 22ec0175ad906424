"""Checks on a validated config that a JSON schema cannot express, run when the Snakefile is
parsed, so bad input stops the run before any job starts, naming the config field.

Checks of this machine's LAMMPS (a pair style in this build, a potential file on disk)
are returned rather than raised: the Snakefile warns of them when it is parsed and stops in
``onstart`` (which a dry run skips), so a cluster config shows its DAG on a laptop without the
cluster's LAMMPS build or data, and still stops before any job is submitted."""
from __future__ import annotations

import os
import re

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


def count_frames(path: str) -> int:
    """Structures in an extxyz file (to fan out one job per batch)."""
    import ase.io

    return sum(1 for _ in ase.io.iread(path, format="extxyz"))


def check_config(config: dict, read_data: bool = True) -> list[str]:
    """Raise ConfigError for bad input; return the problems of this LAMMPS (see above).
    ``read_data``: also read the real-data file (once, in Snakemake's main process)."""
    check_names(config)
    syn, custom = config["synthetic"], config.get("teachers", {})
    elements = config["elements"]
    machine: list[str] = []
    alchemical = syn.get("alchemical") or {}
    for field, names in (("synthetic.teacher", [syn["teacher"]]),
                         ("synthetic.labellers", syn["labellers"])):
        for name in names:
            # an alchemical labeller's teacher covers the source element, not the study's
            transmuted = field == "synthetic.labellers" and name in alchemical
            checked = f"synthetic.alchemical.{name}" if transmuted else field
            try:
                teacher = get_teacher(alchemical[name]["teacher"] if transmuted else name,
                                      custom)
                teacher.commands(source_elements(config, name) if transmuted
                                 else elements)  # raises if an element is not covered
            except ValueError as err:
                message = str(err)
                raise ConfigError(message if message.startswith("config field") else
                                  f"config field '{checked}': {message}") from None
            try:
                teacher.check()  # pair style in this LAMMPS build, potential files exist
            except (ValueError, FileNotFoundError) as err:
                machine.append(f"config field '{checked}': {err}")
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
    if read_data and source.startswith(DFT_PREFIX):
        check_dft_structures(config)
    return machine


def source_elements(config: dict, name: str) -> list[str]:
    """The elements alchemical labeller ``name``'s teacher runs on; a name that is also a
    teacher's would make its MD folder and jobs ambiguous, so it is refused."""
    from .alchemical import Alchemical
    from .teachers import BUILTIN_TEACHERS

    if name in BUILTIN_TEACHERS or name in (config.get("teachers") or {}):
        raise ValueError(f"'{name}' is a teacher's name; name the alchemical labeller "
                         f"otherwise (e.g. {name}_as_{config['elements'][0]})")
    spec = config["synthetic"]["alchemical"][name]
    return Alchemical.from_config(name, spec).source_elements(config["elements"])


def check_dft_structures(config: dict) -> None:
    """Count a ``dft:`` structures file as ``ingest`` will split it once labelled, so a
    ``finetune.n_train`` larger than the training pool stops the run before any DFT job."""
    from .real_data import split_sizes_of_structures

    path = config["real"]["source"].removeprefix(DFT_PREFIX)
    real = {k: v for k, v in config["real"].items() if k != "source"}
    try:
        n_test, n_val, n_pool = split_sizes_of_structures(path, **real)
        check_sizes(n_pool, config["finetune"]["n_train"])
    except ValueError as err:
        message = str(err)
        if message.startswith("config field"):
            raise ConfigError(f"{message} (real.source {config['real']['source']}: "
                              f"{n_test} test, {n_val} validation structures)") from None
        raise ConfigError(f"config field 'real.source': {message}") from None


def real_data_warnings(config: dict) -> list[str]:
    """Settings that run but mislead: a validation set too small to choose an epoch.
    Counted from the file where it is on disk (a labelled file or a ``dft:`` structures
    file); a fetched data set is counted by its real_data job."""
    from .real_data import MIN_VAL_WARN, split_sizes_of_structures

    source = config["real"]["source"]
    if source.startswith(FETCH_PREFIX) or not os.path.exists(source.removeprefix(DFT_PREFIX)):
        return []
    real = {k: v for k, v in config["real"].items() if k != "source"}
    try:
        _, n_val, _ = split_sizes_of_structures(source.removeprefix(DFT_PREFIX), **real)
    except (ValueError, FileNotFoundError):
        return []  # check_config names the problem
    if n_val >= MIN_VAL_WARN:
        return []
    return [f"config field 'real.val_fraction': {n_val} validation structure(s) "
            f"(fewer than {MIN_VAL_WARN}) choose every fine-tune's best epoch and early stop; "
            f"raise real.val_fraction, or add structures"]


def check_freeze_layers(config: dict) -> None:
    """Frozen fine-tuning cannot freeze more interaction layers than the model has."""
    ft = config["finetune"]
    if "frozen" not in ft["modes"] or ft["freeze_layers"] == "all":
        return
    layers = config["model"]["num_layers"]  # the schema's default fills it
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


def config_warnings(config: dict) -> list[str]:
    """Everything that runs but would mislead a reader of the results, printed when the
    Snakefile is parsed (real data, stability start cells)."""
    return real_data_warnings(config) + stability_start_warnings(config)


def stability_start_warnings(config: dict) -> list[str]:
    """Start cells too small for a meaningful temperature (stability.settings.small_cell_problem),
    where their size is known before any job: the teacher's quench size, a start file, or
    the real test cells of a file on disk (labelled, or a dft: structures file)."""
    from .real_data import split_structures
    from .stability.settings import StabilitySettings, small_cell_problem
    from .stability.starts import read_start_source, select_starts

    section = config["stability"]
    factor = section["failure"]["max_temperature_factor"]
    source = section["starts"]["source"]
    try:
        selection = StabilitySettings.from_config(section).starts
        if source == "teacher":
            sizes = [section["starts"]["quench"]["n_atoms"]]
        else:
            if source == "test":
                real = config["real"]["source"]
                if real.startswith(FETCH_PREFIX):
                    return []
                kept, (test, _, _) = split_structures(
                    real.removeprefix(DFT_PREFIX),
                    **{k: v for k, v in config["real"].items() if k != "source"})
                cells = [kept[i] for i in test]
            else:
                cells = read_start_source(source)
            sizes = [len(a) for a in select_starts(cells, selection, config["elements"],
                                                   source)]
    except (ValueError, FileNotFoundError, KeyError):
        return []  # check_config and check_stability_config name these problems
    problems = sorted({p for n in sizes if (p := small_cell_problem(n, factor))})
    return [f"config field 'stability.starts': {p}" for p in problems]


def check_stability_config(config: dict) -> str:
    """Parse-time check of the ``stability`` section (Snakefile): bad fields, and a start file
    that is missing, holds unknown elements or no cell in the window, stop the run before any
    job, naming the field or file. Returns ``starts.source``."""
    from . import job_settings
    from .stability.settings import StabilitySettings
    from .stability.starts import check_window, read_start_source, select_starts

    try:
        cfg = StabilitySettings.from_config(config["stability"])
        if cfg.starts.source == "teacher":  # made by rule stability_starts
            check_window(job_settings.stability_starts(config))
        elif cfg.starts.source != "test":
            select_starts(read_start_source(cfg.starts.source), cfg.starts, config["elements"],
                          f"{cfg.starts.source} (config field 'stability.starts.source')")
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    return cfg.starts.source
