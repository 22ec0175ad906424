"""Records -> batched graphs for the model.

Neighbour lists come from vesin on numpy arrays; only the integer cell shifts are kept, so
the model rebuilds edge vectors in torch (``pos[j] - pos[i] + S @ cell``) and autograd sees
positions (forces) and cell (stress). Segment sums downstream use ``index_add_`` on ``batch``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from vesin import NeighborList


@dataclass
class Batch:
    """Several structures as one disjoint graph (atoms and edges concatenated)."""

    species: torch.Tensor      # (N,) long: index into the model's species list
    positions: torch.Tensor    # (N, 3) Å
    cell: torch.Tensor         # (B, 3, 3) Å, rows are lattice vectors
    pbc: torch.Tensor          # (B, 3) bool
    edge_index: torch.Tensor   # (2, E) long: (i centre, j neighbour), global atom indices
    shifts: torch.Tensor       # (E, 3) integer cell shifts S, stored in the float dtype
    batch: torch.Tensor        # (N,) long: structure index of each atom
    n_atoms: torch.Tensor      # (B,) long
    energy: torch.Tensor | None = None  # (B,) eV, when the records are labelled
    forces: torch.Tensor | None = None  # (N, 3) eV/Å, when the records are labelled
    atomic_energy: torch.Tensor | None = None  # (N,) eV, when the labeller gave per-atom ones

    @property
    def num_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Page-locked copies (the DataLoader calls this for a GPU), so ``to(cuda,
        non_blocking=True)`` overlaps the copy with compute."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn) -> "Batch":
        return replace(self, **{f.name: None if getattr(self, f.name) is None
                                else fn(getattr(self, f.name)) for f in fields(self)})


def species_index(numbers: np.ndarray, species: list[str]) -> np.ndarray:
    """Map atomic numbers to indices in ``species``; name any element the model lacks."""
    table = {atomic_numbers[s]: k for k, s in enumerate(species)}
    unknown = sorted({int(z) for z in numbers} - set(table))
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise ValueError(f"element(s) {names} not in the model's species {species}")
    return np.array([table[int(z)] for z in numbers], dtype=np.int64)


def neighbours(record: dict, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed pairs (i, j) within ``r_max`` and their integer cell shifts S, periodic along
    each axis as ``pbc`` says (slabs, wires): the one neighbour list for graphs and counts."""
    pos = np.asarray(record["positions"], dtype=np.float64)
    cell = np.asarray(record["cell"], dtype=np.float64).reshape(3, 3)
    pbc = [bool(p) for p in np.asarray(record["pbc"], dtype=bool).reshape(3)]
    return NeighborList(cutoff=float(r_max), full_list=True).compute(pos, cell, pbc,
                                                                      quantities="ijS")


def build_graph(record: dict, species: list[str], r_max: float, dtype=torch.float32) -> Batch:
    """One structure as a Batch of size 1 (cache these: the neighbour list is the slow part)."""
    pos = np.asarray(record["positions"], dtype=np.float64)
    cell = np.asarray(record["cell"], dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(record["pbc"], dtype=bool).reshape(3)
    i, j, S = neighbours(record, r_max)
    n = len(pos)
    labelled = "energy" in record and "forces" in record
    return Batch(
        species=torch.from_numpy(species_index(np.asarray(record["numbers"]), species)),
        positions=torch.tensor(pos, dtype=dtype),
        cell=torch.tensor(cell, dtype=dtype).unsqueeze(0),
        pbc=torch.tensor(pbc).unsqueeze(0),
        edge_index=torch.from_numpy(np.stack([i.astype(np.int64), j.astype(np.int64)])),
        shifts=torch.tensor(np.asarray(S, dtype=np.float64), dtype=dtype).reshape(-1, 3),
        batch=torch.zeros(n, dtype=torch.long),
        n_atoms=torch.tensor([n]),
        energy=torch.tensor([float(record["energy"])], dtype=dtype) if labelled else None,
        forces=torch.tensor(np.asarray(record["forces"]), dtype=dtype).reshape(n, 3)
        if labelled else None,
        atomic_energy=torch.tensor(np.asarray(record["energies"]), dtype=dtype).reshape(n)
        if "energies" in record else None,
    )


def concat(graphs: list[Batch]) -> Batch:
    """Join graphs into one disjoint graph, offsetting atom indices per structure."""
    offsets = torch.cumsum(torch.tensor([0] + [int(g.n_atoms.sum()) for g in graphs]), 0)
    n_struct = torch.cumsum(torch.tensor([0] + [g.num_structures for g in graphs]), 0)
    labelled = all(g.energy is not None for g in graphs)
    atomic = all(g.atomic_energy is not None for g in graphs)
    return Batch(
        species=torch.cat([g.species for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        pbc=torch.cat([g.pbc for g in graphs]),
        edge_index=torch.cat([g.edge_index + offsets[k] for k, g in enumerate(graphs)], 1),
        shifts=torch.cat([g.shifts for g in graphs]),
        batch=torch.cat([g.batch + n_struct[k] for k, g in enumerate(graphs)]),
        n_atoms=torch.cat([g.n_atoms for g in graphs]),
        energy=torch.cat([g.energy for g in graphs]) if labelled else None,
        forces=torch.cat([g.forces for g in graphs]) if labelled else None,
        atomic_energy=torch.cat([g.atomic_energy for g in graphs]) if atomic else None,
    )


def collate(records: list[dict], species: list[str], r_max: float,
            dtype=torch.float32) -> Batch:
    """Records -> one Batch; neighbour lists per structure, periodic or not."""
    return concat([build_graph(r, species, r_max, dtype) for r in records])
