"""Random test structures: a few atoms kept apart in a skewed triclinic cell (tests only)."""
from __future__ import annotations

import numpy as np
from ase import Atoms


def random_cell(seed: int, symbols: list[str], n: int, side: float, periodic=True) -> Atoms:
    """n atoms no closer than 1.1 Å in a triclinic cell of about ``side`` Å."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * side + rng.uniform(-0.1, 0.1, (3, 3)) * side
    atoms = Atoms(cell=cell, pbc=periodic)
    while len(atoms) < n:
        atoms.append(symbols[len(atoms) % len(symbols)])
        atoms.positions[-1] = rng.random(3) @ cell
        if len(atoms) > 1 and atoms.get_distances(-1, range(len(atoms) - 1),
                                                  mic=periodic).min() < 1.1:
            atoms.pop()
    return atoms
