"""One structure inside a LAMMPS instance: box, atoms and potential, in either direction.

ASE cells are arbitrary; LAMMPS wants an upper-triangular (restricted triclinic) box, so we
go through ASE's ``Prism`` for the rotation both ways. Used by MD and by single points.

A teacher that is an ASE calculator enters through ``fix external`` in pf/callback mode: at
every force evaluation LAMMPS hands this process its atoms (IDs and positions in the LAMMPS
frame); we rotate them back to the ASE cell, call the calculator and hand back rotated forces
and the energy. The calculator sees the whole structure, so such a system runs on one MPI
rank only (ranks > 1 raise an error rather than give wrong forces).

MPI: every rank runs the same Python. ``create_atoms`` keeps the atoms in each rank's
sub-domain, ``gather_atoms`` gives every rank all atoms, and thermo values are global, so the
same code runs on 1 or N ranks; only rank 0 should write files (``mpi_rank``).
"""
from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism
from ase.data import atomic_masses, atomic_numbers

from .cells import isolated_atom
from .lammps_runtime import new_lammps
from .teachers import Teacher, checked_atomic_energies


class LammpsSystem:
    """A LAMMPS instance holding ``atoms`` with ``teacher``'s potential (metal units)."""

    def __init__(self, atoms: Atoms, teacher: Teacher, elements: list[str] | None = None,
                 lammps_args: tuple[str, ...] = ()):
        self.elements = elements or sorted(set(atoms.get_chemical_symbols()))
        self.prism = Prism(np.array(atoms.cell), pbc=atoms.pbc)
        self.natoms = len(atoms)
        self.symbols = atoms.get_chemical_symbols()
        self.cell, self.pbc = np.array(atoms.cell), atoms.pbc.copy()
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
        self.calculator = None
        self.callback_error: str | None = None
        if teacher.is_ase:
            self._attach_calculator(teacher)
        lmp.commands_list(["neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes",
                           "thermo_style custom step temp pe", "thermo_modify lost ignore norm no"])

    def _attach_calculator(self, teacher: Teacher) -> None:
        nprocs = int(self.lmp.extract_setting("world_size"))
        if nprocs > 1:
            self.lmp.close()
            raise ValueError(f"ASE teacher '{teacher.name}' runs on one MPI rank only "
                             f"(this run has {nprocs}); run it without mpiexec or with -n 1")
        self.calculator = teacher.make_calculator()
        self._calc_atoms = Atoms(self.symbols, cell=self.cell, pbc=self.pbc)
        self._calc_atoms.calc = self.calculator
        self.lmp.commands_list(["fix synthpre_ext all external pf/callback 1 1",
                                "fix_modify synthpre_ext energy yes"])
        self.lmp.set_fix_external_callback("synthpre_ext", self._external_forces)

    def _external_forces(self, caller, ntimestep, nlocal, tag, x, fext) -> None:
        """fix external callback: ASE energy and forces for LAMMPS's current positions.

        An exception cannot cross the C callback (ctypes would print and drop it, and LAMMPS
        would go on with stale forces), so it is kept in ``callback_error``, forces are zeroed
        and the energy set to NaN; MD stops at its next check, single points raise."""
        try:
            self._compute_external(ntimestep, tag, x, fext)
        except Exception as err:  # noqa: BLE001 - reported through callback_error
            if self.callback_error is None:
                self.callback_error = (f"ASE calculator error at step {ntimestep}: "
                                       f"{type(err).__name__}: {err}")
            fext[:] = 0.0
            self.lmp.fix_external_set_energy_global("synthpre_ext", float("nan"))

    def _compute_external(self, ntimestep, tag, x, fext) -> None:
        order = np.asarray(tag, dtype=np.int64).reshape(-1) - 1
        positions = np.empty((self.natoms, 3))
        positions[order] = self.prism.vector_to_ase(np.array(x, dtype=float))
        atoms = self._calc_atoms
        atoms.positions = positions  # unwrapped is fine: ASE calculators handle periodicity
        energy = float(atoms.get_potential_energy())
        forces = self.prism.vector_to_lammps(atoms.get_forces())
        fext[:] = forces[order]
        self.lmp.fix_external_set_energy_global("synthpre_ext", energy)

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
        if self.callback_error:
            raise RuntimeError(self.callback_error)
        return self.potential_energy(), self.forces()

    def single_point_atomic(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Energy, forces and per-atom energies (eV) from one ``run 0`` (``compute pe/atom``,
        invoked through thermo so it is tallied on that step), in ASE order; they sum to the potential energy for pair and many-body styles (SNAP, Tersoff).
        A ``fix external`` teacher sets only a global energy, so it has none here."""
        if self.calculator is not None:
            raise ValueError("per-atom energies: a fix external (ASE) teacher gives none "
                             "through LAMMPS; ask its calculator for 'energies'")
        self.lmp.commands_list(["compute synthpre_pe all pe/atom", "compute synthpre_sum all "
                                "reduce sum c_synthpre_pe", "thermo_style custom step temp pe "
                                "c_synthpre_sum", "run 0"])
        try:
            # gathered by atom ID on every rank (a rank's own atoms are only part of them)
            out = np.array(self.lmp.gather("c_synthpre_pe", 1, 1), dtype=float)
            return self.potential_energy(), self.forces(), out
        finally:
            self.lmp.commands_list(["thermo_style custom step temp pe",
                                    "uncompute synthpre_sum", "uncompute synthpre_pe"])

    def close(self) -> None:
        self.lmp.close()


def mpi_rank() -> int:
    """This process's MPI rank from the launcher's environment (0 without a launcher)."""
    for key in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def omp_args(threads: int | None) -> tuple[str, ...]:
    """LAMMPS command-line switches for ``threads`` OpenMP threads per rank (OPENMP package:
    styles with an /omp variant use it, others run as before); none for 0 or 1."""
    threads = int(threads or 0)
    return ("-sf", "omp", "-pk", "omp", str(threads)) if threads > 1 else ()


def single_point(atoms: Atoms, teacher: Teacher, calculator=None,
                 lammps_args: tuple[str, ...] = ()) -> tuple[float, np.ndarray]:
    """Total energy (eV) and forces (eV/Å) of ``atoms`` with ``teacher``.

    An ASE teacher is called directly, no LAMMPS instance needed (pass ``calculator`` to
    reuse one over many frames); a LAMMPS teacher gets a fresh instance."""
    if teacher.is_ase:
        probe = atoms.copy()
        probe.calc = calculator or teacher.make_calculator()
        return float(probe.get_potential_energy()), np.array(probe.get_forces(), dtype=float)
    system = LammpsSystem(atoms, teacher, lammps_args=lammps_args)
    try:
        return system.single_point()
    finally:
        system.close()


def single_point_atomic(atoms: Atoms, teacher: Teacher, calculator=None,
                        lammps_args: tuple[str, ...] = ()
                        ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Like :func:`single_point`, plus per-atom energies (eV) where the teacher gives local
    energies: a LAMMPS pair style through ``compute pe/atom``, an ASE calculator that
    implements ``energies``; None for the others (their labels carry no per-atom energies)."""
    if teacher.is_ase:
        probe = atoms.copy()
        probe.calc = calculator or teacher.make_calculator()
        energy, forces = single_point(atoms, teacher, probe.calc)
        # only what the calculator computed with the energy: CHGNet lists 'energies' but fills
        # them only with return_site_energies (on in synthpre.foundation); SevenNet and EMT do
        atomic = probe.calc.results.get("energies") if probe.calc.results else None
        if atomic is None:
            return energy, forces, None
        return energy, forces, checked_atomic_energies(teacher.name, energy, atomic, len(atoms))
    system = LammpsSystem(atoms, teacher, lammps_args=lammps_args)
    try:
        return system.single_point_atomic()
    finally:
        system.close()


def isolated_atom_energy(symbol: str, teacher: Teacher, box: float = 20.0, calculator=None,
                         lammps_args: tuple[str, ...] = ()) -> float:
    """E0: one atom alone in a periodic cube wider than twice any teacher's cutoff (the DFT
    labeller has its own, ``dft.isolated_atom_energy``: see there why)."""
    return single_point(isolated_atom(symbol, box), teacher, calculator, lammps_args)[0]
