"""Structural fingerprints of carbon frames: sp/sp2/sp3 coordination fractions and the RDF.

Used by the stability stage to ask whether a fitted model makes the same structure as its
teacher from the same start and protocol. Neighbour lists come from vesin (periodic images
included, so cells smaller than the cutoff work), the same library the model graphs use.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from vesin import NeighborList

# Coordination number -> hybridisation label for carbon; anything else is "other".
HYBRIDISATION = {2: "sp", 3: "sp2", 4: "sp3"}
FRACTION_KEYS = ("sp", "sp2", "sp3", "other")


def _pairs(atoms: Atoms, cutoff: float, full: bool, quantities: str):
    return NeighborList(cutoff=float(cutoff), full_list=full).compute(
        np.asarray(atoms.positions, dtype=np.float64), np.asarray(atoms.cell, dtype=np.float64),
        [bool(p) for p in atoms.pbc], quantities=quantities)


def coordination_numbers(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Neighbours of each atom within ``cutoff`` (Å)."""
    (i,) = _pairs(atoms, cutoff, True, "i")
    return np.bincount(np.asarray(i, dtype=np.int64), minlength=len(atoms))


def coordination_fractions(frames: list[Atoms], cutoff: float) -> dict[str, float]:
    """Fractions of sp (2 neighbours), sp2 (3), sp3 (4) and other atoms over all frames."""
    counts = np.concatenate([coordination_numbers(a, cutoff) for a in frames])
    if counts.size == 0:
        raise ValueError("coordination of an empty set of frames")
    labels = [HYBRIDISATION.get(int(c), "other") for c in counts]
    return {key: labels.count(key) / len(labels) for key in FRACTION_KEYS}


def min_pair_distance(atoms: Atoms, cutoff: float) -> float | None:
    """The shortest interatomic distance below ``cutoff`` (Å), or None if there is none."""
    (d,) = _pairs(atoms, cutoff, False, "d")
    return float(np.min(d)) if len(d) else None


def rdf(frames: list[Atoms], r_max: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Total radial distribution function g(r) averaged over frames: (bin centres, g)."""
    if not frames:
        raise ValueError("RDF of an empty set of frames")
    edges = np.linspace(0.0, r_max, bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = np.zeros(bins)
    for atoms in frames:
        (d,) = _pairs(atoms, r_max, False, "d")
        hist, _ = np.histogram(d, bins=edges)
        density = len(atoms) / atoms.get_volume()
        g += 2.0 * hist / (len(atoms) * density * shell)  # half list: each pair once
    return 0.5 * (edges[1:] + edges[:-1]), g / len(frames)


def rdf_distance(g_a: np.ndarray | list, g_b: np.ndarray | list) -> float:
    """Root-mean-square difference of two g(r) on the same bins (0 = identical)."""
    a, b = np.asarray(g_a, dtype=float), np.asarray(g_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"RDFs on different bins ({a.shape} vs {b.shape})")
    return float(np.sqrt(np.mean((a - b) ** 2)))
