"""Per-species energies fitted on composition: one least-squares fit for the real data's
isolated-atom references (``real.e0: fit``) and for the fine-tuning shift (``fit_shift``)."""
from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers


def species_counts(numbers: list[np.ndarray], species: list[str]) -> np.ndarray:
    """(structures, species) matrix of how many atoms of each species every structure has."""
    z = [atomic_numbers[s] for s in species]
    return np.array([[np.count_nonzero(np.asarray(n) == zi) for zi in z] for n in numbers],
                    dtype=float)


def fit_per_species(counts: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Per-species coefficients c with counts @ c ~ values (least squares; 0 for species no
    structure contains), or None when the compositions cannot separate the species present:
    one ratio alone (all Li8Si8) fixes only a sum, and a minimum-norm split would put
    arbitrary energy on each species. The caller decides what to do then."""
    present = counts.any(axis=0)
    if np.linalg.matrix_rank(counts[:, present]) < present.sum():
        return None
    coef = np.zeros(counts.shape[1])
    coef[present] = np.linalg.lstsq(counts[:, present], values, rcond=None)[0]
    return coef
