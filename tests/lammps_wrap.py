"""A LAMMPS teacher wrapped as an ASE calculator, for tests only: it lets a test drive the
pipeline's ``fix external`` path with a potential whose native pair-style run is known."""
from __future__ import annotations

from ctypes import c_double

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from synthpre.lammps_system import LammpsSystem


class LammpsCalculator(Calculator):
    """Any LAMMPS teacher as an ASE calculator (energy, forces), one LAMMPS instance kept
    while the cell and species stay the same. A test's stand-in for an
    external Python potential."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, teacher: str = "snap_c", teachers: dict | None = None,
                 lammps_args: tuple[str, ...] = (), **kwargs):
        super().__init__(**kwargs)
        from synthpre.teachers import get_teacher

        self.teacher = get_teacher(teacher, teachers)
        self.lammps_args = tuple(lammps_args)
        self._system: LammpsSystem | None = None
        self._key = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        key = (tuple(atoms.numbers), np.array(atoms.cell).tobytes(), tuple(atoms.pbc))
        if self._system is None or key != self._key:
            if self._system is not None:
                self._system.close()
            self._system, self._key = LammpsSystem(atoms, self.teacher,
                                                   lammps_args=self.lammps_args), key
        else:
            x = self._system.prism.vector_to_lammps(atoms.positions, wrap=True)
            self._system.lmp.scatter_atoms("x", 1, 3, (len(x) * 3 * c_double)(*x.ravel()))
        energy, forces = self._system.single_point()
        self.results.update(energy=energy, free_energy=energy, forces=forces)

    def __del__(self):
        if getattr(self, "_system", None) is not None:
            self._system.close()
            self._system = None
