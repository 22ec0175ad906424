"""Convert labelled ASE frames to records (see docs/architecture.md) and check them.

Checks name the file, the structure index and the key, so bad input never reaches training.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from .frames import ENERGY_KEY, FORCES_KEY


def to_record(atoms: Atoms, source: str, index: int, energy_key: str = ENERGY_KEY,
              forces_key: str = FORCES_KEY) -> dict:
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
    return record


def to_atoms(record: dict) -> Atoms:
    atoms = Atoms(numbers=record["numbers"], positions=record["positions"],
                  cell=record["cell"], pbc=record["pbc"])
    atoms.info[ENERGY_KEY] = float(record["energy"])
    atoms.arrays[FORCES_KEY] = np.asarray(record["forces"], dtype=float)
    return atoms
