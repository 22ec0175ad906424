"""Real (quantum-mechanical) data: ingest an extxyz data set, fix the test and validation
splits once, and define nested training subsets per seed (drawn from the seed alone).

Energies are referenced to isolated atoms (E - sum E0) like the synthetic labels. ``e0`` is
``"file"`` (energies are already relative; E0 from the frames' ``e0_<Symbol>`` keys, as this
pipeline's DFT stage writes them), a mapping given in the config, or ``"fit"`` (least
squares of total energy on composition).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms

from .atomic import write_json
from .provenance import code_version
from .composition import fit_per_species, species_counts
from .frames import read_frames, to_record
from .shard_files import read_shard, sha256, write_shard


def fit_e0(frames: list[Atoms], energies: np.ndarray, elements: list[str]) -> dict[str, float]:
    """Per-element references by least squares of total energy on composition. Needs as many
    distinct compositions as elements present: one ratio alone (all Li8Si8) fixes only a sum,
    and a silent minimum-norm split would put arbitrary energy on each species."""
    counts = species_counts([a.numbers for a in frames], elements)
    present = [s for s, n in zip(elements, counts.any(axis=0)) if n]
    coef = fit_per_species(counts, energies)
    if coef is None:
        raise ValueError(f"real.e0 'fit' cannot separate the references of {present}: the "
                         f"structures' compositions are not independent (give real.e0 as a "
                         f"mapping, or data with more compositions)")
    return {s: float(c) for s, c in zip(elements, coef) if s in present}


def closest_distance(atoms: Atoms) -> float:
    """The shortest distance between two atoms, or an atom and a periodic image of any atom.

    Plain numpy (a neighbour-list library would import torch at parse time, 3.5 s here). In a
    fully periodic cell the difference wrapped to fractional [-1/2, 1/2) is the nearest image
    whenever it is shorter than half the cell's smallest height h (a vector that short has
    every fractional component below 1/2), so one image per pair decides, as for typical
    cells; otherwise (tiny, or partly periodic cells) the 27 neighbouring images are searched.
    """
    pos = np.asarray(atoms.positions, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not pbc.any():
        return _closest(pos, np.zeros((1, 3)), None)
    if pbc.all():
        heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
        frac = np.linalg.solve(cell.T, pos.T).T
        wrapped = _closest(pos, np.zeros((1, 3)), (frac, cell))
        if wrapped < heights.min() / 2:
            return wrapped
    shifts = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                       if all(p or s == 0 for p, s in zip(pbc, (a, b, c)))], dtype=float)
    return _closest(pos, shifts @ cell, None)


def _closest(pos: np.ndarray, images: np.ndarray, wrap) -> float:
    """Shortest |pos_j - pos_i + image| over pairs and ``images`` (the zero image first or
    absent), an atom and itself excluded; ``wrap`` = (fractional positions, cell) wraps each
    difference to its nearest image first. Rows in chunks: memory O(64 x n x images)."""
    best = np.inf
    zero = np.flatnonzero(~images.any(axis=1))
    for start in range(0, len(pos), 64):
        if wrap is None:
            diff = pos[None, :, :] - pos[start:start + 64, None, :]
        else:
            frac, cell = wrap
            dfrac = frac[None, :, :] - frac[start:start + 64, None, :]
            diff = (dfrac - np.round(dfrac)) @ cell
        d = np.linalg.norm(diff[:, :, None, :] + images[None, None, :, :], axis=-1)
        rows = np.arange(d.shape[0])
        if len(zero):
            d[rows, start + rows, zero[0]] = np.inf  # an atom and itself
        best = min(best, float(d.min()))
    return best


def check_distances(path: str, index: int, atoms: Atoms, min_distance: float) -> None:
    """Refuse a structure with two atoms closer than ``min_distance`` (periodic images
    included), naming the file and structure."""
    if min_distance <= 0 or len(atoms) == 0:
        return
    closest = closest_distance(atoms)
    if closest < min_distance:
        raise ValueError(f"{path}, structure {index}: two atoms {closest:.3f} Angstrom apart, "
                         f"closer than config field 'real.min_distance' ({min_distance}); "
                         f"fix or drop the structure (or lower real.min_distance)")


def load_real(paths: list[str], elements: list[str], energy_key: str, forces_key: str,
              config_type_key: str, split_key: str, e0, exclude_config_types: list[str],
              min_distance: float = 0.0):
    """Read and check a real data set (one or more files, in order); return (records,
    is_test flags or None, e0)."""
    sources = [(path, index, atoms) for path in paths
               for index, atoms in enumerate(read_frames(path))]
    if not sources:
        raise ValueError(f"{', '.join(paths)}: no structures")
    for path, index, atoms in sources:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            raise ValueError(f"{path}, structure {index}: element(s) {unknown} outside the "
                             f"model's set {elements} (config field 'elements')")
    sources = [s for s in sources
               if str(s[2].info.get(config_type_key, "")) not in set(exclude_config_types)]
    if not sources:
        raise ValueError(f"config field 'real.exclude_config_types' {exclude_config_types} "
                         f"drops every structure of {', '.join(paths)}")
    for path, index, atoms in sources:
        check_distances(path, index, atoms, min_distance)
    records = []
    for path, index, atoms in sources:
        record = to_record(atoms, path, index, energy_key, forces_key)
        if config_type_key in atoms.info:
            record["config_type"] = str(atoms.info[config_type_key])
        records.append(record)
    kept = [atoms for _, _, atoms in sources]
    if e0 == "file":
        e0 = {s: float(kept[0].info[f"e0_{s}"]) for s in elements if f"e0_{s}" in kept[0].info}
        missing = sorted({s for a in kept for s in a.get_chemical_symbols()} - set(e0))
        if missing:
            raise ValueError(f"{', '.join(paths)}: real.e0 is 'file' but structures carry no "
                             f"e0 for {missing}")
    else:
        if e0 == "fit":
            e0 = fit_e0(kept, np.array([r["energy"] for r in records]), elements)
        for record, atoms in zip(records, kept):
            record["energy"] -= sum(float(e0[s]) for s in atoms.get_chemical_symbols())
    is_test = None
    if split_key and split_key in kept[0].info:
        is_test = np.array([str(a.info.get(split_key, "")).lower() == "test" for a in kept])
    return records, is_test, {s: float(v) for s, v in e0.items()}


# Fewer validation structures than this choose every fine-tune's best epoch (and early stop)
# on the noise of a handful of cells: the config check warns (real.val_fraction, val_max).
MIN_VAL_WARN = 5


def val_count(n_rest: int, val_fraction: float, val_max: int) -> int:
    """Validation structures out of the ``n_rest`` non-test ones: ``val_fraction`` of them,
    at most ``val_max``, at least one (the paper's min(10 %, 100) with the schema's values)."""
    return max(1, min(val_max, round(val_fraction * n_rest)))


def make_splits(n_total: int, is_test, test_fraction: float, seed: int,
                val_fraction: float = 0.1, val_max: int = 100):
    """Fixed test/validation indices and the training pool. Validation = ``val_fraction`` of
    the non-test structures, at most ``val_max`` (real.val_fraction, real.val_max)."""
    rng = np.random.default_rng(seed)
    if is_test is None:
        order = rng.permutation(n_total)
        n_test = max(1, round(test_fraction * n_total))
        test, rest = np.sort(order[:n_test]), order[n_test:]
    else:
        test, rest = np.flatnonzero(is_test), rng.permutation(np.flatnonzero(~is_test))
    n_val = val_count(len(rest), val_fraction, val_max)
    return test, np.sort(rest[:n_val]), np.sort(rest[n_val:])


def split_structures(path: str, config_type_key="config_type", split_key="split",
                     exclude_config_types=(), test_fraction=0.2, split_seed=0,
                     val_fraction=0.1, val_max=100, **_labels):
    """The structures ``ingest`` keeps of ``path`` and its (test, val, pool) indices, read
    without their labels (a ``dft:`` structures file before labelling splits the same way),
    so sizes and test cells are known before any job."""
    kept = [a for a in read_frames(path)
            if str(a.info.get(config_type_key, "")) not in set(exclude_config_types)]
    if not kept:
        raise ValueError(f"{path}: no structures (after real.exclude_config_types)")
    is_test = None
    if split_key and split_key in kept[0].info:
        is_test = np.array([str(a.info.get(split_key, "")).lower() == "test" for a in kept])
    return kept, make_splits(len(kept), is_test, test_fraction, split_seed, val_fraction,
                             val_max)


def split_sizes_of_structures(path: str, **real) -> tuple[int, int, int]:
    """(test, val, pool) sizes ``ingest`` will give ``path`` (``split_structures``), so a pool
    too small for ``finetune.n_train`` stops the run before any DFT job."""
    _, (test, val, pool) = split_structures(path, **real)
    return len(test), len(val), len(pool)


def subset_order(pool_size: int, seed: int) -> np.ndarray:
    """A seed's ordering of the training pool; the subset of size n is its first n entries,
    so n=25 is contained in n=50 for the same seed, and adding a size or a seed to a study
    changes no existing subset."""
    return np.random.default_rng(seed).permutation(pool_size)


def check_sizes(pool_size: int, sizes: list[int]) -> None:
    too_big = [n for n in sizes if n > pool_size]
    if too_big:
        raise ValueError(f"config field 'finetune.n_train' asks for {too_big} structures but "
                         f"the real training pool has only {pool_size}")


def read_real(paths: list[str], elements: list[str], energy_key="energy", forces_key="forces",
              config_type_key="config_type", split_key="split", e0="file",
              exclude_config_types=(), test_fraction=0.2, split_seed=0, val_fraction=0.1,
              val_max=100, min_distance=0.0):
    """Records, (test, val, pool) indices and e0 of a real data set, as ``ingest`` splits it."""
    records, is_test, e0 = load_real(paths, elements, energy_key, forces_key, config_type_key,
                                     split_key, e0, list(exclude_config_types), min_distance)
    return records, make_splits(len(records), is_test, test_fraction, split_seed,
                                val_fraction, val_max), e0


def ingest(path: str | list[str], out_dir: str, elements: list[str], **real) -> dict:
    """Fixed test, validation and pool files plus ``summary.json``; ``real`` are the config's
    ``real`` fields (key names, e0, exclusions, split)."""
    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    records, (test, val, pool), e0 = read_real(paths, elements, **real)
    out = Path(out_dir)
    attrs = {"e0_json": json.dumps(e0), "source": json.dumps(paths)}
    for name, idx in (("test", test), ("val", val), ("pool", pool)):
        write_shard(out / f"{name}.h5", [records[i] for i in idx], attrs)
    summary = {"source": paths, "e0": e0, "n_test": len(test), "n_val": len(val),
               "n_pool": len(pool), "code_version": code_version(),
               # every reader of these files checks them against this (shard_files.read_shard)
               "sha256": {f"{name}.h5": sha256(out / f"{name}.h5")
                          for name in ("test", "val", "pool")}}
    write_json(out / "summary.json", summary)
    return summary


def run_real_data_job(settings: dict, source: str | list[str], out_dir: str) -> dict:
    """Rule ``real_data``, from ``synthpre.job_settings.real``: ``ingest`` with the
    slice's elements and ``real`` fields."""
    return ingest(source, out_dir, settings["elements"], **settings["real"])


def training_subset(real_dir: str, n: int, seed: int) -> list[dict]:
    pool = read_shard(Path(real_dir) / "pool.h5")
    check_sizes(len(pool), [n])
    return [pool[i] for i in subset_order(len(pool), seed)[:n]]
