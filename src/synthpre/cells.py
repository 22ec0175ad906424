"""Random starting cells: atoms placed uniformly in a cube at a given density, with a
hard-sphere rejection so no pair starts closer than ``min_distance`` (the paper's ~1 Å)."""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

AMU_G = 1.66053906660e-24  # grams per atomic mass unit
A3_CM3 = 1e-24             # cm^3 per Å^3


def isolated_atom(symbol: str, box: float) -> Atoms:
    """One atom at the centre of a periodic cube of side ``box`` Å: the cell every labeller's
    E0 is computed in (a potential and DFT differ only in the box they need, see callers)."""
    return Atoms(symbol, positions=[(box / 2,) * 3], cell=[box] * 3, pbc=True)


def cube_length(symbols: list[str], density: float) -> float:
    """Edge (Å) of the cube that holds these atoms at ``density`` g/cm^3."""
    mass_g = sum(atomic_masses[atomic_numbers[s]] for s in symbols) * AMU_G
    return float((mass_g / density / A3_CM3) ** (1.0 / 3.0))


def density_of(atoms: Atoms) -> float:
    """Mass density in g/cm^3."""
    return float(atoms.get_masses().sum() * AMU_G / (atoms.get_volume() * A3_CM3))


# Random sequential placement jams near a packing fraction of 0.38 in theory, and with
# ``max_tries`` attempts per atom it fails earlier: measured here (10 seeds each), 64 and 200
# atoms always placed up to 0.28 and first failed at 0.30 (200 atoms) and 0.32 (64 atoms).
# The limit keeps a margin below that; carbon at min_distance 1 Å: 9.5 g/cm^3.
MAX_PACKING = 0.25


def check_packing(symbols: list[str], density: float, min_distance: float) -> None:
    """Refuse a density at which random placement would fail (or succeed only by luck)."""
    packing = len(symbols) * (np.pi / 6) * min_distance**3 / cube_length(symbols, density) ** 3
    if packing > MAX_PACKING:
        raise ValueError(f"density {density} g/cm^3 cannot hold {len(symbols)} atoms placed at "
                         f"random with min_distance {min_distance} Å (hard-sphere packing "
                         f"{packing:.2f} > {MAX_PACKING}, where random placement starts to jam)")


def cell_composition(elements: list[str], n_atoms: int,
                     composition: dict[str, float] | None = None) -> dict[str, int]:
    """Atoms per element in a random cell of ``n_atoms``. ``composition`` gives relative
    amounts (``{Li: 1, Si: 1}`` or ``{Li: 0.5, Si: 0.5}``); without it, ``elements`` must be
    one element. Counts round by largest remainder, so they always sum to ``n_atoms``."""
    if not composition:
        if len(elements) != 1:
            raise ValueError(f"config field 'synthetic.composition' is needed for random cells "
                             f"of more than one element ({elements})")
        return {elements[0]: int(n_atoms)}
    outside = sorted(set(composition) - set(elements))
    if outside:
        raise ValueError(f"config field 'synthetic.composition': element(s) {outside} are not "
                         f"in config field 'elements' {elements}")
    names = sorted(composition)
    weights = np.array([float(composition[s]) for s in names])
    if not (np.all(weights > 0) and np.all(np.isfinite(weights))):
        raise ValueError(f"config field 'synthetic.composition': amounts must be > 0, "
                         f"got {composition}")
    exact = n_atoms * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[:n_atoms - counts.sum()]:
        counts[k] += 1
    if np.any(counts == 0):
        raise ValueError(f"config field 'synthetic.composition': {composition} in "
                         f"{n_atoms} atoms leaves element(s) "
                         f"{[s for s, c in zip(names, counts) if c == 0]} with no atom")
    return {s: int(c) for s, c in zip(names, counts)}


def random_cell(composition: dict[str, int], density: float, min_distance: float,
                seed: int, max_tries: int = 2000) -> Atoms:
    """Place atoms one by one, rejecting positions closer than ``min_distance`` (periodic)."""
    symbols = [s for s, n in sorted(composition.items()) for _ in range(n)]
    check_packing(symbols, density, min_distance)
    length = cube_length(symbols, density)
    rng = np.random.default_rng(seed)
    placed = np.empty((0, 3))
    for i in range(len(symbols)):
        for _ in range(max_tries):
            trial = rng.random(3) * length
            delta = placed - trial
            delta -= length * np.round(delta / length)
            if len(placed) == 0 or np.min(np.einsum("ij,ij->i", delta, delta)) >= min_distance**2:
                placed = np.vstack([placed, trial])
                break
        else:
            raise ValueError(f"could not place atom {i + 1} of {len(symbols)} at density "
                             f"{density} g/cm^3 with min_distance {min_distance} Å")
    return Atoms(symbols, positions=placed, cell=[length] * 3, pbc=True)
