"""One structure inside a LAMMPS instance: box, atoms and potential, in either direction.

ASE cells are arbitrary; LAMMPS wants an upper-triangular (restricted triclinic) box, so we
go through ASE's ``Prism`` for the rotation both ways. Used by MD and by single points.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism
from ase.data import atomic_masses, atomic_numbers

from .lammps_runtime import new_lammps
from .teachers import Teacher


class LammpsSystem:
    """A LAMMPS instance holding ``atoms`` with ``teacher``'s potential (metal units)."""

    def __init__(self, atoms: Atoms, teacher: Teacher, elements: list[str] | None = None,
                 lammps_args: tuple[str, ...] = ()):
        self.elements = elements or sorted(set(atoms.get_chemical_symbols()))
        self.prism = Prism(np.array(atoms.cell), pbc=atoms.pbc)
        self.natoms = len(atoms)
        self.lmp = new_lammps(*lammps_args)
        xhi, yhi, zhi, xy, xz, yz = (repr(float(v)) for v in self.prism.get_lammps_prism())
        bounds = " ".join("p" if p else "f" for p in atoms.pbc)
        lmp = self.lmp
        lmp.commands_list([
            "units metal", "atom_style atomic", "atom_modify map yes sort 0 0.0",
            f"boundary {bounds}",
            f"region box prism 0 {xhi} 0 {yhi} 0 {zhi} {xy} {xz} {yz} units box",
            f"create_box {len(self.elements)} box",
            *[f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(self.elements)],
        ])
        types = [self.elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
        x = self.prism.vector_to_lammps(atoms.positions, wrap=True)
        lmp.create_atoms(self.natoms, list(range(1, self.natoms + 1)), types,
                         x.ravel().tolist())
        lmp.commands_list(teacher.commands(self.elements))
        lmp.commands_list(["neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes",
                           "thermo_style custom step temp pe", "thermo_modify lost ignore norm no"])
        self.symbols = atoms.get_chemical_symbols()
        self.cell = np.array(atoms.cell)
        self.pbc = atoms.pbc.copy()

    @property
    def rank(self) -> int:
        return int(self.lmp.extract_setting("world_rank"))

    def potential_energy(self) -> float:
        return float(self.lmp.get_thermo("pe"))

    def forces(self) -> np.ndarray:
        f = np.array(self.lmp.gather_atoms("f", 1, 3), dtype=float).reshape(-1, 3)
        return self.prism.vector_to_ase(f)

    def atoms(self) -> Atoms:
        """The current structure as ASE atoms, positions wrapped into the cell."""
        x = np.array(self.lmp.gather_atoms("x", 1, 3), dtype=float).reshape(-1, 3)
        return Atoms(self.symbols, positions=self.prism.vector_to_ase(x, wrap=True),
                     cell=self.cell, pbc=self.pbc)

    def single_point(self) -> tuple[float, np.ndarray]:
        self.lmp.command("run 0")
        return self.potential_energy(), self.forces()

    def close(self) -> None:
        self.lmp.close()


def single_point(atoms: Atoms, teacher: Teacher) -> tuple[float, np.ndarray]:
    """Total energy (eV) and forces (eV/Å) of ``atoms`` with ``teacher``."""
    system = LammpsSystem(atoms, teacher)
    try:
        return system.single_point()
    finally:
        system.close()


def isolated_atom_energy(symbol: str, teacher: Teacher, box: float = 20.0) -> float:
    """E0: one atom alone in a periodic cube wider than twice any teacher's cutoff."""
    return single_point(Atoms(symbol, positions=[[0, 0, 0]], cell=[box] * 3, pbc=True),
                        teacher)[0]
