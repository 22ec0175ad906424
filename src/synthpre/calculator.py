"""ASE calculator around a model file.

Returns TOTAL energies: the model predicts energies relative to isolated atoms, so the
isolated-atom energies ``e0`` of the data it was last trained on are added back per atom.
"""
from __future__ import annotations

import os

from ase.calculators.calculator import Calculator, all_changes

from .graph import collate
from .modelfile import load_model


class SynthpreCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model_path: str | os.PathLike, device="cpu",
                 compile: bool | None = None, **kwargs):
        """``compile``: run the fast kernel through torch.compile or not (None: as the model
        file says, i.e. as it was trained)."""
        super().__init__(**kwargs)
        self.model, self.meta = load_model(model_path, device=device, compile=compile)
        self.device = device
        self.e0 = self.meta.get("e0", {})
        missing = [s for s in self.model.species if s not in self.e0]
        if missing:
            raise ValueError(f"model file {model_path} has no isolated-atom energy (e0) for "
                             f"{', '.join(missing)}: cannot return total energies")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        record = {"numbers": atoms.numbers, "positions": atoms.positions,
                  "cell": atoms.cell.array, "pbc": atoms.pbc}
        batch = collate([record], self.model.species, self.model.r_max,
                        self.model.dtype).to(self.device)
        periodic = bool(atoms.pbc.all())
        out = self.model(batch, compute_stress="stress" in properties and periodic)
        e0 = sum(self.e0[s] for s in atoms.get_chemical_symbols())
        energy = out["energy"][0].detach().item() + e0
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().cpu().double().numpy()
        if "stress" in out:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]  # Voigt: xx yy zz yz xz xy
