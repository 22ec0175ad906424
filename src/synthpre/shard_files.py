"""Binary training shards (HDF5): many structures per file, read one shard at a time.

One shard holds concatenated per-atom arrays plus a pointer array ``ptr`` (structure i owns
atoms ``ptr[i]:ptr[i+1]``). Training streams shards, so a data set larger than memory works.
Values are stored at full precision, so a shard round-trips exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator

import h5py
import numpy as np

from .atomic import atomic_path

STRING = h5py.string_dtype()
OPTIONAL_STRINGS = ("config_type", "traj_id")
ATOMIC_ENERGIES = "energies"  # optional per-atom dataset, (n_atoms,), eV, same ptr as forces


def write_shard(path: str | os.PathLike, records: list[dict], attrs: dict | None = None) -> None:
    """Write records to one HDF5 file atomically. Per-atom energies are a dataset only when
    every record has them: a shard mixing frames with and without them is refused, so a shard
    either carries them for all its frames or for none."""
    with_atomic = sum(ATOMIC_ENERGIES in r for r in records)
    if 0 < with_atomic < len(records):
        raise ValueError(f"{path}: {with_atomic} of {len(records)} records have per-atom "
                         f"'{ATOMIC_ENERGIES}'; a shard holds them for all frames or none")
    counts = np.array([len(r["numbers"]) for r in records], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5["ptr"] = ptr
        h5["numbers"] = np.concatenate([r["numbers"] for r in records]).astype(np.int16) \
            if records else np.zeros(0, np.int16)
        for key in ("positions", "forces"):
            h5[key] = np.concatenate([r[key] for r in records]).astype(np.float64) \
                if records else np.zeros((0, 3))
        h5["cell"] = np.array([r["cell"] for r in records], dtype=np.float64).reshape(-1, 3, 3)
        h5["pbc"] = np.array([r["pbc"] for r in records], dtype=bool).reshape(-1, 3)
        h5["energy"] = np.array([r["energy"] for r in records], dtype=np.float64)
        if records and with_atomic:
            h5[ATOMIC_ENERGIES] = np.concatenate([r[ATOMIC_ENERGIES] for r in records]
                                                 ).astype(np.float64)
        h5["time_ps"] = np.array([r.get("time_ps", np.nan) for r in records], dtype=np.float64)
        for key in OPTIONAL_STRINGS:
            h5.create_dataset(key, data=[str(r.get(key, "")) for r in records], dtype=STRING)
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value


def read_shard(path: str | os.PathLike) -> list[dict]:
    """All records of one shard. Each dataset is read in one call; records hold views into
    those arrays (no per-record copies), scalars are converted in bulk. A file that is not a
    complete shard, or labels that are not finite, raise ValueError naming the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"shard {path} not found")
    listed = listed_sha256(path)
    if listed is not None:
        verify_file(path, *listed)
    try:
        with h5py.File(path, "r") as h5:
            ptr = h5["ptr"][:].tolist()
            numbers = h5["numbers"][:].astype(np.int64)
            positions, forces = h5["positions"][:], h5["forces"][:]
            cell, pbc = h5["cell"][:], h5["pbc"][:]
            energy, time_ps = h5["energy"][:], h5["time_ps"][:].tolist()
            strings = [(k, h5[k].asstr()[:].tolist()) for k in OPTIONAL_STRINGS]
            atomic = h5[ATOMIC_ENERGIES][:] if ATOMIC_ENERGIES in h5 else None
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a readable shard ({err}); expected an HDF5 file with "
                         f"datasets ptr, numbers, positions, forces, cell, pbc, energy") from err
    checked = (("energy", energy), ("forces", forces), ("positions", positions))
    if atomic is not None:
        if len(atomic) != len(numbers):
            raise ValueError(f"{path}: dataset '{ATOMIC_ENERGIES}' has {len(atomic)} rows, "
                             f"expected one per atom ({len(numbers)})")
        checked += ((ATOMIC_ENERGIES, atomic),)
    for key, values in checked:
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            where = first if key == "energy" else int(np.searchsorted(ptr, first, "right") - 1)
            raise ValueError(f"{path}: non-finite {key} in structure {where} "
                             f"({int(bad.sum())} value rows in all)")
    energy = energy.tolist()
    records = []
    for i, (a, b) in enumerate(zip(ptr[:-1], ptr[1:])):
        record = {"numbers": numbers[a:b], "positions": positions[a:b], "cell": cell[i],
                  "pbc": pbc[i], "energy": energy[i], "forces": forces[a:b]}
        if atomic is not None:
            record[ATOMIC_ENERGIES] = atomic[a:b]
        if math.isfinite(time_ps[i]):
            record["time_ps"] = time_ps[i]
        for key, values in strings:
            if values[i]:
                record[key] = values[i]
        records.append(record)
    return records


def has_atomic_energies(path: str | os.PathLike) -> bool:
    """Whether a shard holds per-atom energies (the optional ``energies`` dataset)."""
    with h5py.File(path, "r") as h5:
        return ATOMIC_ENERGIES in h5


def read_column(path: str | os.PathLike, key: str) -> list[str]:
    """One string column (e.g. traj_id) of a shard, without reading the structures."""
    try:
        with h5py.File(path, "r") as h5:
            return h5[key].asstr()[:].tolist()
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: no readable column '{key}' ({err})") from err


def read_attrs(path: str | os.PathLike) -> dict:
    try:
        with h5py.File(path, "r") as h5:
            return dict(h5.attrs)
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err


# Files whose content matched their manifest in this process: (path, size, mtime, ctime,
# expected sha256). ctime changes on any write, so a file changed since is read again.
_VERIFIED: set[tuple] = set()


def verify_checksums(folder: str | os.PathLike, shards: list[dict], source: str) -> None:
    """Each shard's sha256 against ``source`` (the manifest that lists them): a changed or
    corrupt shard must not train or be measured on silently. Every reader of shards calls
    this (``synthpre.shard.shard_paths``); each file is hashed once per process."""
    for entry in shards:
        verify_file(os.path.join(folder, entry["file"]), entry["sha256"], source)


# The files that list a folder's shards with their sha256: a labeller's shard manifest and
# the real data's summary (synthpre.real_data.ingest).
CHECKSUM_LISTS = ("manifest.json", "summary.json")
_LISTS: dict[tuple, dict] = {}


def listed_sha256(path: str | os.PathLike) -> tuple[str, str] | None:
    """(sha256, list file) for a shard that its folder's manifest or summary lists, else None
    (a shard written by hand or by a test, outside a pipeline folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    for list_name in CHECKSUM_LISTS:
        list_path = os.path.join(folder, list_name)
        try:
            st = os.stat(list_path)
        except FileNotFoundError:
            continue
        key = (list_path, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _LISTS:
            try:
                with open(list_path) as fh:
                    data = json.load(fh)
            except (OSError, ValueError) as err:
                raise ValueError(f"{list_path}: not a valid JSON list of shards ({err})") from err
            sums = {e["file"]: e["sha256"] for e in data.get("shards", []) if "sha256" in e}
            _LISTS[key] = {**sums, **data.get("sha256", {})}
        if name in _LISTS[key]:
            return _LISTS[key][name], list_path
    return None


def verify_file(path: str | os.PathLike, expected: str, source: str) -> None:
    """``path``'s sha256 against ``expected`` from ``source``; raise naming both if not."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"shard {path} listed in {source} not found")
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected)
    if key in _VERIFIED:
        return
    digest = sha256(path)
    if digest != expected:
        raise ValueError(f"{path}: sha256 {digest[:12]}... differs from {expected[:12]}"
                         f"... in {source}: the shard is corrupt or was changed; rerun the "
                         f"rule that wrote it (delete {source})")
    _VERIFIED.add(key)


def iter_shards(paths: list[str], rng: np.random.Generator | None = None,
                selection: dict[str, list[int]] | None = None) -> Iterator[dict]:
    """Stream records shard by shard; with ``rng``, shuffle shard order and within each shard;
    with ``selection`` (path -> record indices), only those records of each shard."""
    order = list(paths)
    if rng is not None:
        rng.shuffle(order)
    for path in order:
        records = read_shard(path)
        if selection is not None:
            records = [records[i] for i in selection.get(path, [])]
        if rng is not None:
            rng.shuffle(records)
        yield from records


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_batches(paths: list[str], batch_size: int, seed: int, epoch: int,
                  selection: dict[str, list[int]] | None = None) -> Iterator[list[dict]]:
    """Batches for one epoch, streamed shard by shard in an order fixed by (seed, epoch), so a
    resumed run sees the same batches."""
    batch: list[dict] = []
    for record in iter_shards(paths, np.random.default_rng([seed, epoch]), selection):
        batch.append(record)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
