"""Label frames with a potential: energies relative to that labeller's isolated atoms.

Labelling is a fresh single point per frame, separate from the MD, so the same structures can
be relabelled by any number of labellers (the paper compared ML and empirical labels on
identical structures). A LAMMPS labeller gets a fresh LAMMPS instance per frame (on every MPI
rank when launched with mpiexec); an ASE labeller is one calculator called directly on every
frame (no LAMMPS; under mpiexec each rank repeats the same work, so run it on one rank).
A foundation teacher on a GPU labels many frames per model call (per-atom energies included,
checked like one frame's); on a CPU one frame per call is faster (measured:
docs/benchmarks.md, "Foundation teachers").
"""
from __future__ import annotations

from ase import Atoms

from .alchemical import alchemical_of
from .foundation import label_batch, on_gpu
from .frames import labelled_copy
from .lammps_system import isolated_atom_energy, single_point_atomic
from .progress import Progress
from .teachers import Teacher, checked_atomic_energies, get_teacher


def isolated_atom_energies(teacher: Teacher, elements: list[str], calculator=None,
                           lammps_args: tuple[str, ...] = ()) -> dict[str, float]:
    return {s: isolated_atom_energy(s, teacher, calculator=calculator, lammps_args=lammps_args)
            for s in elements}


def label_frames(frames: list[Atoms], labeller: Teacher, e0: dict[str, float] | None = None,
                 lammps_args: tuple[str, ...] = ()) -> list[Atoms]:
    """Copies of ``frames`` with ``energy`` (E - sum E0) and ``forces`` from ``labeller``, and
    per-atom ``energies`` (E_i - E0_i) where the labeller gives local energies."""
    elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    calculator = labeller.make_calculator() if labeller.is_ase else None
    e0 = e0 or isolated_atom_energies(labeller, elements, calculator, lammps_args)
    batched = label_batch(calculator, frames) if calculator is not None \
        and on_gpu(calculator) else None
    labelled = []
    progress = Progress(f"label with {labeller.name}", len(frames), unit="frames")
    for k, atoms in enumerate(frames):
        if batched:
            energy, forces = batched[0][k], batched[1][k]
            atomic = checked_atomic_energies(labeller.name, energy, batched[2][k], len(atoms))
        else:
            energy, forces, atomic = single_point_atomic(atoms, labeller, calculator, lammps_args)
        labelled.append(labelled_copy(atoms, energy, forces, labeller.name, e0, atomic))
        progress.update(len(labelled))
    return labelled


def label_job(settings: dict, labeller_name: str, frames: list[Atoms],
              lammps_args: tuple[str, ...] = ()) -> list[Atoms]:
    """Rule ``label``, from ``synthpre.job_settings.label``: the labeller's labels; for an
    alchemical labeller, its source teacher's labels on its own MD frames, transformed to the
    target element (synthpre.alchemical)."""
    alchemical = alchemical_of(settings, labeller_name)
    labeller = get_teacher(alchemical.teacher if alchemical else labeller_name,
                           settings["teachers"])
    labelled = label_frames(frames, labeller, lammps_args=lammps_args) if frames else []
    return [alchemical.transform(a) for a in labelled] if alchemical else labelled


def run_label_job(settings: dict, labeller_name: str, frames_path: str, out: str,
                  lammps_args: tuple[str, ...] = ()) -> int | None:
    """Rule ``label``: label one frames file and write it; the number of frames labelled.
    Under ``mpiexec -n N`` every rank runs LAMMPS and only rank 0 writes (the others return
    None), so no two ranks race on one output."""
    from .frames import read_frames, write_frames
    from .lammps_system import mpi_rank

    frames = read_frames(frames_path)
    labelled = label_job(settings, labeller_name, frames, lammps_args)
    if mpi_rank() != 0:
        return None
    write_frames(out, labelled)
    return len(frames)

