"""Structural fingerprints of MD frames: coordination (per element pair; sp/sp2/sp3 fractions
for carbon) and the RDF, and the element-pair distance thresholds the stability stage uses.

Used by the stability stage to ask whether a fitted model makes the same structure as its
teacher from the same start and protocol. Neighbour lists come from vesin (periodic images
included, so cells smaller than the cutoff work), the same library the model graphs use.

Thresholds left as ``auto`` in the config are derived from the elements: ``factor`` x the sum
of the two elements' covalent radii (``ase.data.covalent_radii``, Cordero et al. 2008). With
the schema's factors (close pair 0.45, coordination 1.25) carbon gets 0.68 Å and 1.90 Å (the
demo's hand-set 0.7 and 1.85), silicon 1.00 Å and 2.78 Å (Si-Si bonds 2.35 Å, the first
minimum of liquid/amorphous Si's g(r) near 2.8-3.0 Å), Li-Si 1.08 Å and 2.99 Å.
"""
from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

# Coordination number -> hybridisation label for carbon; anything else is "other".
HYBRIDISATION = {2: "sp", 3: "sp2", 4: "sp3"}
FRACTION_KEYS = ("sp", "sp2", "sp3", "other")
MAX_LISTED_CN = 8  # coordination numbers above this are pooled as "<El>:>8"


def pair_name(a: str, b: str) -> str:
    """An unordered element pair, alphabetically: ("Si", "Li") -> "Li-Si"."""
    return "-".join(sorted((a, b)))


def pair_thresholds(elements: list[str], value, factor: float) -> dict[str, float]:
    """A distance per unordered element pair: ``value`` for every pair when it is a number,
    else (``"auto"``) ``factor`` x (covalent radius of a + of b), rounded to 0.01 Å."""
    pairs = itertools.combinations_with_replacement(sorted(elements), 2)
    if value != "auto":
        return {pair_name(a, b): float(value) for a, b in pairs}
    return {pair_name(a, b): round(factor * float(covalent_radii[atomic_numbers[a]]
                                                  + covalent_radii[atomic_numbers[b]]), 2)
            for a, b in pairs}


def _limit_of(cutoff) -> float:
    return max(cutoff.values()) if isinstance(cutoff, dict) else float(cutoff)


def _within(atoms: Atoms, cutoff, full: bool):
    """Pairs (i, j, d) closer than their pair's cutoff (a number, or a pair_thresholds dict)."""
    i, j, d = _pairs(atoms, _limit_of(cutoff), full, "ijd")
    i, j, d = (np.asarray(x) for x in (i, j, d))
    if isinstance(cutoff, dict) and len(d):
        symbols = np.array(atoms.get_chemical_symbols())
        limits = np.array([cutoff[pair_name(a, b)] for a, b in zip(symbols[i], symbols[j])])
        keep = d < limits
        i, j, d = i[keep], j[keep], d[keep]
    return i.astype(np.int64), j.astype(np.int64), d


def _pairs(atoms: Atoms, cutoff: float, full: bool, quantities: str):
    from vesin import NeighborList  # imports torch: not at parse time (config_check warnings)

    return NeighborList(cutoff=float(cutoff), full_list=full).compute(
        np.asarray(atoms.positions, dtype=np.float64), np.asarray(atoms.cell, dtype=np.float64),
        [bool(p) for p in atoms.pbc], quantities=quantities)


def coordination_numbers(atoms: Atoms, cutoff) -> np.ndarray:
    """Neighbours of each atom within ``cutoff`` (Å; a number, or one per element pair)."""
    i, _, _ = _within(atoms, cutoff, True)
    return np.bincount(i, minlength=len(atoms))


def coordination_fractions(frames: list[Atoms], cutoff) -> dict[str, float]:
    """Fractions of atoms by coordination over all frames. Carbon alone: sp (2 neighbours),
    sp2 (3), sp3 (4) and other. Any other chemistry: ``"<El>:<n>"``, the fraction of that
    element's atoms with n neighbours (of any element), so each element's fractions sum to 1."""
    counts = np.concatenate([coordination_numbers(a, cutoff) for a in frames]) \
        if frames else np.array([])
    if counts.size == 0:
        raise ValueError("coordination of an empty set of frames")
    symbols = np.concatenate([a.get_chemical_symbols() for a in frames])
    if set(symbols) == {"C"}:
        labels = [HYBRIDISATION.get(int(c), "other") for c in counts]
        return {key: labels.count(key) / len(labels) for key in FRACTION_KEYS}
    out = {}
    for element in sorted(set(symbols)):
        mine = np.minimum(counts[symbols == element], MAX_LISTED_CN + 1)
        for n, k in zip(*np.unique(mine, return_counts=True)):
            label = f">{MAX_LISTED_CN}" if n > MAX_LISTED_CN else str(int(n))
            out[f"{element}:{label}"] = float(k / mine.size)
    return out


def coordination_by_pair(frames: list[Atoms], cutoff) -> dict[str, float]:
    """Mean number of B neighbours around an A atom, ``"A-B"`` for every ordered pair of the
    elements present (e.g. Li-Si and Si-Li differ), over all frames."""
    if not frames:
        raise ValueError("coordination of an empty set of frames")
    present = sorted({s for a in frames for s in a.get_chemical_symbols()})
    totals = {f"{a}-{b}": 0 for a in present for b in present}
    centres = dict.fromkeys(present, 0)
    for atoms in frames:
        symbols = np.array(atoms.get_chemical_symbols())
        i, j, _ = _within(atoms, cutoff, True)
        for a, b in zip(symbols[i], symbols[j]):
            totals[f"{a}-{b}"] += 1
        for element in present:
            centres[element] += int(np.sum(symbols == element))
    return {key: value / centres[key.split("-")[0]] for key, value in totals.items()}


def closest_violation(atoms: Atoms, limits) -> tuple[float, str, float] | None:
    """The closest pair below its limit (a number, or one per element pair): (distance,
    pair name, limit), or None when no pair is too close."""
    i, j, d = _within(atoms, limits, False)
    if not len(d):
        return None
    k = int(np.argmin(d))
    symbols = atoms.get_chemical_symbols()
    pair = pair_name(symbols[i[k]], symbols[j[k]])
    return float(d[k]), pair, limits[pair] if isinstance(limits, dict) else float(limits)


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
