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
            atoms.calc = None
    return frames


def set_labels(atoms: Atoms, energy: float, forces: np.ndarray) -> None:
    atoms.info[ENERGY_KEY] = float(energy)
    atoms.arrays[FORCES_KEY] = np.asarray(forces, dtype=float).reshape(len(atoms), 3)


def get_labels(atoms: Atoms) -> tuple[float, np.ndarray]:
    return float(atoms.info[ENERGY_KEY]), np.asarray(atoms.arrays[FORCES_KEY], dtype=float)
