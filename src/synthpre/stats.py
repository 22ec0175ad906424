"""Data-set statistics for manifests and reports: energies, forces, neighbour counts."""
from __future__ import annotations

import numpy as np

from .graph import neighbours


def neighbour_count(record: dict, r_max: float) -> int:
    """Directed neighbour pairs within ``r_max``: the model's edges, so the message
    normalisation (mean neighbours) matches the graphs, slabs included."""
    return len(neighbours(record, r_max)[0])


def dataset_stats(records: list[dict], r_max: float) -> dict:
    if not records:
        return {"n_structures": 0, "n_atoms": 0}
    natoms = np.array([len(r["numbers"]) for r in records])
    e_per_atom = np.array([r["energy"] for r in records]) / natoms
    forces = np.concatenate([r["forces"].ravel() for r in records])
    edges = sum(neighbour_count(r, r_max) for r in records)
    return {
        "n_structures": int(len(records)),
        "n_atoms": int(natoms.sum()),
        "energy_per_atom_mean": float(e_per_atom.mean()),
        "energy_per_atom_std": float(e_per_atom.std()),
        "energy_per_atom_min": float(e_per_atom.min()),
        "energy_per_atom_max": float(e_per_atom.max()),
        "force_component_rms": float(np.sqrt(np.mean(forces**2))),
        "force_component_max_abs": float(np.abs(forces).max()),
        "mean_neighbours": float(edges / natoms.sum()),
        "r_max": float(r_max),
    }
