"""Alchemical labellers: one element's teacher data, relabelled as another element and rescaled.

The paper's negative control (Gardner, Baker & Deringer 2024): pre-train on synthetic data of
*another* element, transmuted to the study's element with positions and cell scaled, to see
whether pre-training helps because of the teacher's chemistry or only because of generic
structure. Here such a data set is a labeller of the study (``synthetic.alchemical``, a map
from the labeller's name to ``{teacher, from, to, scale, energy_scale, forces}``) and flows
through the ordinary stages:

- **md**: the source teacher runs on random cells of the *source* element. The job's density
  (``d<rho>`` in its name) is the density the frames will have *after* the transform, so the
  study's ``densities`` describe the data the student sees; the MD runs at
  ``rho * (M_source / M_target) * scale^3`` (cell masses) with ``min_distance / scale``,
  the same random cell up to the scale.
- **label**: the source teacher labels its own frames, which are then transformed: element
  ``from`` becomes ``to``, cell and positions are multiplied by ``scale``.
- **shard**, **pretrain**, ...: unchanged; they see frames of the target element.

Labels under the transform. The transformed potential is E'(r') = a E(r'/s), where ``s`` is
``scale`` and ``a`` is ``energy_scale`` (default 1: energies relative to isolated atoms kept
as the source teacher gave them, per atom, as the paper did). Then F' = -dE'/dr' = a F / s:
with ``forces: gradient`` (the default) forces are scaled so that they stay the gradient of
the energy in the scaled coordinates, which a model trained on both E and F needs to fit them
consistently. The paper's code kept forces unscaled (scale 1.5, C -> Si, forces as given):
``forces: unscaled`` reproduces that (then F' is not -dE'/dr'). The isolated-atom energy
recorded for the target element is ``a`` times the source's (``e0_<to>``). Temperatures
(``anneal_T``, ``temperature_K``) stay the source MD's: the transform does not rescale them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from .cells import density_of


@dataclass(frozen=True)
class Alchemical:
    """One alchemical labeller (``synthetic.alchemical.<name>``; the schema holds defaults)."""
    name: str
    teacher: str
    source: str          # "from": the element the teacher runs on
    target: str          # "to": the element of the study
    scale: float         # target length / source length (e.g. C-C 1.54 / Si-Si 2.35 Å)
    energy_scale: float  # a in E' = a E
    forces: str          # "gradient" (F' = a F / s) or "unscaled" (the paper's code)

    @classmethod
    def from_config(cls, name: str, spec: dict) -> "Alchemical":
        where = f"synthetic.alchemical.{name}"
        missing = [k for k in ("teacher", "from", "to", "scale", "energy_scale", "forces")
                   if k not in spec]
        if missing:
            raise ValueError(f"config field '{where}.{missing[0]}' is missing")
        if not spec["scale"] > 0 or not spec["energy_scale"] > 0:
            raise ValueError(f"config field '{where}': scale and energy_scale must be > 0")
        if spec["forces"] not in ("gradient", "unscaled"):
            raise ValueError(f"config field '{where}.forces' is {spec['forces']!r} "
                             f"(gradient or unscaled)")
        return cls(name=name, teacher=spec["teacher"], source=spec["from"], target=spec["to"],
                   scale=float(spec["scale"]), energy_scale=float(spec["energy_scale"]),
                   forces=spec["forces"])

    # --- the source side: what the teacher's MD runs on ---------------------------------
    def source_elements(self, elements: list[str]) -> list[str]:
        """The study's elements with the target replaced by the source element."""
        if self.target not in elements:
            raise ValueError(f"config field 'synthetic.alchemical.{self.name}.to': "
                             f"{self.target} is not in config field 'elements' {elements}")
        if self.source in elements and self.source != self.target:
            raise ValueError(f"config field 'synthetic.alchemical.{self.name}.from': "
                             f"{self.source} is already an element of the study {elements}, "
                             f"so the transform could not tell its atoms apart")
        return sorted(self.source if s == self.target else s for s in elements)

    def source_composition(self, composition: dict | None) -> dict | None:
        if not composition:
            return composition
        return {(self.source if s == self.target else s): v for s, v in composition.items()}

    def source_density(self, target_density: float, counts: dict[str, int]) -> float:
        """The MD density (g/cm^3) whose cell, scaled by ``scale``, has ``target_density``;
        ``counts`` are the source cell's atoms per element."""
        mass_source = sum(atomic_masses[atomic_numbers[s]] * n for s, n in counts.items())
        mass_target = sum(atomic_masses[atomic_numbers[self._to_target(s)]] * n
                          for s, n in counts.items())
        return target_density * mass_source / mass_target * self.scale**3

    def md_settings(self, settings: dict) -> dict:
        """``synthpre.job_settings.md`` of the study, turned into the source teacher's MD:
        source elements and composition, the hard-sphere distance divided by ``scale``."""
        return {**settings, "elements": self.source_elements(settings["elements"]),
                "composition": self.source_composition(settings.get("composition")),
                "min_distance": settings["min_distance"] / self.scale}

    # --- the transform --------------------------------------------------------------------
    def _to_target(self, symbol: str) -> str:
        return self.target if symbol == self.source else symbol

    def transform(self, atoms: Atoms) -> Atoms:
        """A labelled source frame as a target frame (see the module docstring)."""
        from .frames import (  # ase.io: not at parse time (common.smk)
            ATOMIC_ENERGIES_KEY, ENERGY_KEY, FORCES_KEY)

        if ENERGY_KEY not in atoms.info or FORCES_KEY not in atoms.arrays:
            raise ValueError(f"alchemical labeller '{self.name}': a frame without "
                             f"'{ENERGY_KEY}'/'{FORCES_KEY}' labels cannot be transformed")
        out = Atoms([self._to_target(s) for s in atoms.get_chemical_symbols()],
                    positions=atoms.positions * self.scale, cell=np.array(atoms.cell) * self.scale,
                    pbc=atoms.pbc)
        info = {k: v for k, v in atoms.info.items() if not k.startswith("e0_")}
        for key, value in atoms.info.items():
            if key.startswith("e0_"):
                info[f"e0_{self._to_target(key[3:])}"] = self.energy_scale * float(value)
        force_factor = self.energy_scale / (self.scale if self.forces == "gradient" else 1.0)
        info.update({ENERGY_KEY: self.energy_scale * float(atoms.info[ENERGY_KEY]),
                     "labeller": self.name, "density": density_of(out),
                     "alchemical": f"{self.teacher}:{self.source}->{self.target}"
                                   f"*{self.scale:g},E*{self.energy_scale:g},F:{self.forces}"})
        out.info.update(info)
        out.arrays[FORCES_KEY] = force_factor * np.asarray(atoms.arrays[FORCES_KEY], dtype=float)
        if ATOMIC_ENERGIES_KEY in atoms.arrays:  # scaled like the total: they still sum to it
            out.arrays[ATOMIC_ENERGIES_KEY] = self.energy_scale * np.asarray(
                atoms.arrays[ATOMIC_ENERGIES_KEY], dtype=float)
        return out


def alchemical_of(settings: dict, name: str) -> Alchemical | None:
    """The alchemical labeller a job's settings carry (``"alchemical"``), or None."""
    spec = settings.get("alchemical")
    return Alchemical.from_config(name, spec) if spec else None


def source_teacher(config: dict, name: str) -> str:
    """The teacher that runs the MD and labels of labeller ``name``: an alchemical labeller's
    source teacher, else ``name`` itself."""
    spec = (config["synthetic"].get("alchemical") or {}).get(name)
    return spec["teacher"] if spec else name


def md_folder(config: dict, labeller: str) -> str:
    """Whose MD a labeller labels: its own (``md/<name>/``) for an alchemical labeller, the
    study's teacher's for every other, which all relabel the same frames."""
    if labeller in (config["synthetic"].get("alchemical") or {}):
        return labeller
    return config["synthetic"]["teacher"]
