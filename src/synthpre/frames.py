"""Frames on disk: extended XYZ with labels and provenance (the contract between stages).

Labels live in ``atoms.info["energy"]`` (eV, relative to isolated atoms of the labeller) and
``atoms.arrays["forces"]`` (eV/Å), not in an ASE calculator, so they survive any copy.
Provenance keys in ``atoms.info``: density, anneal_T, time_ps, traj_id, teacher, labeller,
and ``e0_<Symbol>`` for the labeller's isolated-atom energies.
"""
from __future__ import annotations

import os

import ase.io
import numpy as np
from ase import Atoms

from .atomic import atomic_path

ENERGY_KEY = "energy"
FORCES_KEY = "forces"
ATOMIC_ENERGIES_KEY = "energies"


def write_frames(path: str | os.PathLike, frames: list[Atoms]) -> None:
    """Write frames atomically as extxyz (an empty list gives an empty file)."""
    with atomic_path(path) as tmp:
        if frames:
            ase.io.write(tmp, frames, format="extxyz", write_results=False)
        else:
            tmp.write_text("")


def read_frames(path: str | os.PathLike) -> list[Atoms]:
    """Read every frame; labels stay in info/arrays whatever ASE does with 'energy'/'forces'."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"frames file {path} not found")
    if os.path.getsize(path) == 0:
        return []
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as err:  # ase raises XYZError, ValueError, IndexError, ...
        raise ValueError(f"{path}: not a readable extended-XYZ file ({type(err).__name__}: "
                         f"{err})") from err
    for atoms in frames:
        calc = atoms.calc
        if calc is not None:  # ASE moves 'energy'/'forces' into a SinglePointCalculator
            if "energy" in calc.results:
                atoms.info[ENERGY_KEY] = float(calc.results["energy"])
            if "forces" in calc.results:
                atoms.arrays[FORCES_KEY] = np.asarray(calc.results["forces"], dtype=float)
            if "energies" in calc.results:
                atoms.arrays[ATOMIC_ENERGIES_KEY] = np.asarray(calc.results["energies"],
                                                               dtype=float)
            atoms.calc = None
    return frames


def labelled_copy(atoms: Atoms, total_energy: float, forces: np.ndarray, labeller: str,
                  e0: dict[str, float], atomic_energies: np.ndarray | None = None) -> Atoms:
    """A copy of ``atoms`` with one labeller's label, the label contract written once (teacher
    and GPAW labels alike): energy relative to that labeller's isolated atoms (E - sum E0),
    forces, and the provenance keys ``labeller`` and ``e0_<Symbol>``. Per-atom energies, where
    the labeller gives them, are shifted the same way (E_i - E0(species_i)), so they sum to the
    stored energy; a labeller without them stores no ``energies`` array."""
    out = atoms.copy()
    out.calc = None
    out.info[ENERGY_KEY] = float(total_energy) - sum(e0[s] for s in atoms.get_chemical_symbols())
    out.arrays[FORCES_KEY] = np.asarray(forces, dtype=float).reshape(len(atoms), 3)
    out.arrays.pop(ATOMIC_ENERGIES_KEY, None)
    if atomic_energies is not None:
        shift = np.array([e0[s] for s in atoms.get_chemical_symbols()], dtype=float)
        out.arrays[ATOMIC_ENERGIES_KEY] = np.asarray(atomic_energies, dtype=float) - shift
    out.info["labeller"] = labeller
    out.info.update({f"e0_{s}": float(v) for s, v in e0.items()})
    return out


def to_record(atoms: Atoms, source: str, index: int, energy_key: str = ENERGY_KEY,
              forces_key: str = FORCES_KEY, atomic_energies: bool = False) -> dict:
    """The labelled frame as a record (the shards' row: numbers, positions, cell, pbc, energy,
    forces and provenance), checked; errors name the file, the structure index and the key, so
    bad input never reaches training. With ``atomic_energies`` (synthetic shards) a frame's
    per-atom ``energies`` label goes along; real data never carries them."""
    where = f"{source}, structure {index}"
    if energy_key not in atoms.info:
        raise ValueError(f"{where}: missing energy key '{energy_key}'")
    if forces_key not in atoms.arrays:
        raise ValueError(f"{where}: missing forces key '{forces_key}'")
    energy = float(atoms.info[energy_key])
    forces = np.asarray(atoms.arrays[forces_key], dtype=float)
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"{where}: key '{forces_key}' has shape {forces.shape}, "
                         f"expected ({len(atoms)}, 3)")
    if not np.isfinite(energy):
        raise ValueError(f"{where}: key '{energy_key}' is not finite ({energy})")
    if not np.all(np.isfinite(forces)):
        raise ValueError(f"{where}: key '{forces_key}' has non-finite values")
    record = {
        "numbers": atoms.numbers.astype(np.int64),
        "positions": atoms.positions.astype(float),
        "cell": np.array(atoms.cell, dtype=float),
        "pbc": atoms.pbc.astype(bool),
        "energy": energy,
        "forces": forces,
    }
    for key in ("config_type", "traj_id"):
        if key in atoms.info:
            record[key] = str(atoms.info[key])
    if "time_ps" in atoms.info:
        record["time_ps"] = float(atoms.info["time_ps"])
    if atomic_energies and ATOMIC_ENERGIES_KEY in atoms.arrays:
        atomic = np.asarray(atoms.arrays[ATOMIC_ENERGIES_KEY], dtype=float).reshape(-1)
        if len(atomic) != len(atoms) or not np.all(np.isfinite(atomic)):
            raise ValueError(f"{where}: key '{ATOMIC_ENERGIES_KEY}' must hold one finite "
                             f"value per atom ({len(atoms)})")
        record[ATOMIC_ENERGIES_KEY] = atomic
    return record
