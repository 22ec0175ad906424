"""Label frames with a potential: energies relative to that labeller's isolated atoms.

Labelling is a fresh single point per frame, separate from the MD, so the same structures can
be relabelled by any number of labellers (the paper compared ML and empirical labels on
identical structures).
"""
from __future__ import annotations

from ase import Atoms

from .frames import set_labels
from .lammps_system import LammpsSystem, isolated_atom_energy
from .teachers import Teacher


def isolated_atom_energies(teacher: Teacher, elements: list[str]) -> dict[str, float]:
    return {s: isolated_atom_energy(s, teacher) for s in elements}


def label_frames(frames: list[Atoms], labeller: Teacher,
                 e0: dict[str, float] | None = None) -> list[Atoms]:
    """Copies of ``frames`` with ``energy`` (E - sum E0) and ``forces`` from ``labeller``."""
    elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    e0 = e0 or isolated_atom_energies(labeller, elements)
    labelled = []
    for atoms in frames:
        system = LammpsSystem(atoms, labeller)
        try:
            energy, forces = system.single_point()
        finally:
            system.close()
        out = atoms.copy()
        set_labels(out, energy - sum(e0[s] for s in atoms.get_chemical_symbols()), forces)
        out.info["labeller"] = labeller.name
        out.info.update({f"e0_{s}": v for s, v in e0.items()})
        labelled.append(out)
    return labelled
