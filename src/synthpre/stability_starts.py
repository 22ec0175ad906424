"""Rule ``stability_starts``: start cells for the stability stage quenched by the teacher
(``stability.starts.source: teacher``), as the paper started its stability runs from quenched
amorphous cells. ``count`` random cells at densities spread evenly over the window are melted
and quenched by ``synthetic.teacher`` with the synthetic MD's engine (``md.run_trajectory``:
its time step, thermostat and blow-up check); the last frame of each is a start.
"""
from __future__ import annotations

import logging

import numpy as np
from ase import Atoms

from .cells import cell_composition, check_packing
from .frames import write_frames
from .lammps_system import mpi_rank
from .md import Protocol, run_trajectory
from .teachers import get_teacher

log = logging.getLogger(__name__)


def quench_protocol(settings: dict) -> Protocol:
    """The quench stages with the synthetic protocol's integration settings, one frame at the
    very end (the dump interval is the whole quench, counted in steps as the stages are)."""
    protocol = settings["protocol"]
    stages = settings["starts"]["quench"]["stages"]
    steps = sum(round(s["duration_ps"] * 1000.0 / protocol["timestep_fs"]) for s in stages)
    return Protocol.from_config({**protocol, "stages": stages, "keep_frames_on_failure": False,
                                 "dump_every_ps": steps * protocol["timestep_fs"] / 1000.0})


def check_window(settings: dict) -> None:
    """Refuse, naming the field, a window whose densest cell could not be placed at random
    (before any MD: at parse time in the Snakefile, and again when run by hand)."""
    starts = settings["starts"]
    composition = cell_composition(settings["elements"], starts["quench"]["n_atoms"],
                                   settings.get("composition"))
    try:
        check_packing([s for s, n in composition.items() for _ in range(n)],
                      starts["density_max"], settings["min_distance"])
    except ValueError as err:
        raise ValueError(f"config field 'stability.starts.density_max': {err}") from None


def quench_starts(settings: dict, out: str, lammps_args: tuple[str, ...] = ()) -> list[Atoms]:
    """Quench the start cells (``synthpre.job_settings.stability_starts``) and write them to
    ``out`` (extxyz, atomically). A quench that fails names its density and the reason."""
    starts, quench = settings["starts"], settings["starts"]["quench"]
    teacher = get_teacher(settings["teacher"], settings["teachers"])
    composition = cell_composition(settings["elements"], quench["n_atoms"],
                                   settings.get("composition"))
    check_window(settings)
    protocol = quench_protocol(settings)
    densities = np.linspace(starts["density_min"], starts["density_max"], starts["count"])
    cells = []
    for k, density in enumerate(densities):
        seed = settings["seed"] + k
        if mpi_rank() == 0:
            log.info("quench %d of %d: %d atoms at %.3f g/cm^3 (seed %d)", k + 1,
                     len(densities), quench["n_atoms"], density, seed)
        result = run_trajectory(teacher, composition, float(density), 0.0, protocol, seed,
                                f"quench-{k}", settings["min_distance"], lammps_args)
        if result.failure or not result.frames:
            raise ValueError(f"stability.starts.quench: {teacher.name}'s quench of cell {k} at "
                             f"{density:.3f} g/cm^3 failed ({result.failure or 'no frame'})")
        last = result.frames[-1]
        cell = Atoms(last.numbers, positions=last.positions, cell=last.cell, pbc=True)
        cell.info.update(density=float(density), seed=seed, teacher=teacher.name,
                         temperature_K=last.info["temperature_K"])
        cells.append(cell)
    if mpi_rank() == 0:
        write_frames(out, cells)
    return cells
