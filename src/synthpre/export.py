"""Export a model file to the metatomic format: one TorchScript file for MD engines.

ASE (``metatomic-ase``), LAMMPS (``pair_style metatomic``), i-PI and torch-sim load the
file without synthpre (docs/deploy.md). The network is the same weights evaluated with the
``fast`` kernel's arithmetic in plain ops (``kernel.FastConvolution.plain``: TorchScript
cannot compile its custom autograd Function; 2-3x faster than the ``reference`` kernel, which
scripts too). The isolated-atom energies ``e0`` are added per atom, so the exported model
returns the same total energies as ``SynthpreCalculator``; forces and stress come from the
engine's autograd through the neighbour-list vectors, as metatomic specifies.
"""
# No ``from __future__ import annotations`` here: metatomic checks forward's annotations as
# real types (List[System], ...), and string annotations fail that check.
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch
from ase.data import atomic_numbers
from e3nn.util import jit
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput,
                             NeighborListOptions, System)

from .atomic import atomic_path
from .model import NequIP
from .modelfile import load_model


class MetatomicNequIP(torch.nn.Module):
    """The metatomic model interface around ``NequIP.atomic_energies`` (energy output)."""

    def __init__(self, model: NequIP, e0: dict[str, float]):
        super().__init__()
        self.model = model
        numbers = [atomic_numbers[s] for s in model.species]
        # atomic number -> index in the model's species (-1: not a species of the model)
        table = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        table[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("species_of_type", table)
        self.register_buffer("e0", torch.tensor([e0[s] for s in model.species],
                                                dtype=model.dtype))
        self.neighbors = NeighborListOptions(cutoff=model.r_max, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbors]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        if "energy" not in outputs:
            return {}
        device = self.e0.device
        species: List[torch.Tensor] = []
        vectors: List[torch.Tensor] = []
        edges: List[torch.Tensor] = []
        owner: List[torch.Tensor] = []
        offset = 0
        for k, system in enumerate(systems):
            s = self.species_of_type[system.types]
            if bool((s < 0).any()):  # the engine checks atomic_types; this is a backstop
                raise ValueError("an atomic type of the system is not a species of the model")
            pairs = system.get_neighbor_list(self.neighbors)
            ij = pairs.samples.values[:, :2].to(torch.long).T
            species.append(s)
            vectors.append(pairs.values.reshape(-1, 3))
            edges.append(ij + offset)
            owner.append(torch.full_like(s, k))
            offset += len(system)
        species_all, owner_all = torch.cat(species), torch.cat(owner)
        atomic = self.model.atomic_energies(species_all, torch.cat(vectors),
                                            torch.cat(edges, dim=1))
        atomic = atomic + self.e0[species_all]
        # index of each atom within its own system, for the per-atom samples
        local = torch.cat([torch.arange(len(s), device=device) for s in species])
        if selected_atoms is not None:  # only these atoms count (domain decomposition)
            starts = torch.cumsum(torch.tensor([0] + [len(s) for s in species[:-1]],
                                               device=device), 0)
            sel = selected_atoms.values.to(torch.long)
            keep = torch.zeros_like(owner_all, dtype=torch.bool)
            keep[starts[sel[:, 0]] + sel[:, 1]] = True
        else:
            keep = torch.ones_like(owner_all, dtype=torch.bool)

        if outputs["energy"].sample_kind == "atom":
            values = atomic[keep].unsqueeze(-1)
            samples = Labels(["system", "atom"],
                             torch.stack([owner_all[keep], local[keep]], 1).to(torch.int32))
        else:
            values = torch.zeros(len(systems), 1, dtype=atomic.dtype, device=device)
            values = values.index_add(0, owner_all[keep], atomic[keep].unsqueeze(-1))
            samples = Labels(["system"], torch.arange(len(systems), dtype=torch.int32,
                                                      device=device).unsqueeze(-1))
        block = TensorBlock(values=values, samples=samples, components=[],
                            properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32,
                                                                      device=device)))
        return {"energy": TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32,
                                                              device=device)), [block])}


def export_model(model_path: str | os.PathLike, out: str | os.PathLike) -> AtomisticModel:
    """Write ``out``, a metatomic model of ``model_path``; errors name the file at fault."""
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist (for {out})")
    model, meta = load_model(model_path, kernel="fast")
    missing = [s for s in model.species if s not in meta.get("e0", {})]
    if missing:
        raise ValueError(f"cannot export {model_path}: it has no isolated-atom energy (e0) "
                         f"for {', '.join(missing)}, so it cannot return total energies")
    unknown = [s for s in model.species if s not in atomic_numbers]
    if unknown:
        raise ValueError(f"cannot export {model_path}: species {unknown} are not elements")
    cfg = model.config
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=[atomic_numbers[s] for s in model.species],
        # message passing: an atom feels atoms num_layers * r_max away (ghost atoms in LAMMPS)
        interaction_range=cfg["num_layers"] * model.r_max,
        length_unit="angstrom",
        supported_devices=["cpu", "cuda"],
        dtype=cfg["dtype"],
    )
    metadata = ModelMetadata(
        name=f"synthpre NequIP ({', '.join(model.species)})",
        description=f"exported by synthpre from {Path(model_path).name} (synthetic "
                    "pre-training, Gardner, Baker & Deringer, MLST 5, 015003, 2024); energies "
                    "are totals: isolated-atom energies e0 included",
        references={"architecture": ["https://doi.org/10.1038/s41467-022-29939-5"]},
    )
    with warnings.catch_warnings():  # torch's TorchScript deprecation notices (docs/deploy.md)
        warnings.simplefilter("ignore", DeprecationWarning)
        # e3nn compiles its own modules (some by tracing); metatomic then scripts the rest
        wrapped = MetatomicNequIP(jit.compile(model), meta["e0"]).eval()
        exported = AtomisticModel(wrapped, metadata, capabilities)
        with atomic_path(out) as tmp:
            exported.save(str(tmp))
    return exported
