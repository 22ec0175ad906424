"""Fine-tuned foundation teachers: the foundation model adapted to the study's own DFT first.

Used raw, a foundation teacher passes its own errors to the student (in the Li-Si example
pre-training on its labels made the test energies worse than scratch). Gardner et al. 2025
(arXiv 2506.10956) first fine-tune the foundation model on the small DFT set, then generate
the synthetic data with it. A config asks for that with a teacher entry
``{base: chgnet-0.3, finetune: {...}}``; rule ``teacher_finetune`` runs ``run_teacher_finetune_job``
and writes the model file, which then drives MD (``fix external``) and labels like any ASE
teacher (``calculator`` below is its factory).

Which real structures, and why: the training subset of size ``n`` of seed ``seed``
(``real_data.subset_order``), read from the real *pool* file only. The rule is given the
pool and nothing else, so the test set cannot reach the teacher; the structures' pool
indices are written beside the model (``<model>.json``) so that anyone can check. The
defaults (schema; resolved in ``job_settings.teacher_finetune``) are the largest
``finetune.n_train`` of the first seed: every student's subset of that seed is contained in
it, and no student sees more real data than the teacher did. Downstream results record that
count (``teacher_real_structures``), so teacher knowledge is not mistaken for the student's
data efficiency.

The library's own training API does the fine-tuning: CHGNet's ``Trainer`` and
``StructureData``, which take structures, energies and forces directly. SevenNet's trainer
runs from its own YAML input and graph-building pipeline, and SevenNet-0 is slower per
MD step on CPU (numbers in docs/benchmarks.md); a ``sevennet-0`` base is refused with a message.

Energies: the real data are E - sum E0 with DFT's free-atom E0; the foundation model's zero
is its fitted per-element reference. Before training, a per-element shift (least squares of
the model's raw energy minus the DFT energy, on composition) moves the DFT energies to the
model's zero, so fine-tuning learns energy *differences* and forces, not a constant offset
(CHGNet's composition model stays frozen).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .atomic import atomic_path, write_json
from .job_settings import strict

log = logging.getLogger(__name__)

BASES = ("chgnet-0.3", "sevennet-0")
FINETUNABLE = ("chgnet-0.3",)


@dataclass(frozen=True)
class FinetuneSettings:
    """A fine-tuned teacher's ``finetune`` fields (schema defaults; n and seed resolved)."""
    n: int                 # real training structures (the first n of the seed's order)
    seed: int              # which seed's subset (real_data.subset_order)
    epochs: int
    lr: float
    batch_size: int
    energy_weight: float   # CHGNet's energy_loss_ratio (energy per atom, eV)
    force_weight: float    # force_loss_ratio
    torch_seed: int


def refuse_base(base: str, name: str) -> None:
    if base not in BASES:
        raise ValueError(f"teacher '{name}': base '{base}' is not a foundation model "
                         f"({', '.join(BASES)})")
    if base not in FINETUNABLE:
        raise ValueError(f"teacher '{name}': fine-tuning base '{base}' is not supported "
                         f"(SevenNet's trainer needs its own YAML and graph-build pipeline; "
                         f"use base: chgnet-0.3, docs/foundation.md)")


def records_to_atoms(records: list[dict]) -> list[Atoms]:
    return [Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
            for r in records]


def energy_shift(raw_energies: np.ndarray, real_energies: np.ndarray, numbers: list,
                 elements: list[str]) -> dict[str, float]:
    """Per-element shift d (eV) with raw ~ real + sum_el n_el d_el, by least squares; with
    too few compositions the minimum-norm solution, which shifts every structure of the
    data by the same amount as any other solution would."""
    from .composition import species_counts

    counts = species_counts(numbers, elements).astype(float)
    coef, *_ = np.linalg.lstsq(counts, raw_energies - real_energies, rcond=None)
    return {s: float(c) for s, c in zip(elements, coef)}


def _chgnet_predict(model, atoms: list[Atoms], batch_size: int):
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = [AseAtomsAdaptor.get_structure(a) for a in atoms]
    preds = model.predict_structure(structures, task="ef", batch_size=batch_size)
    preds = [preds] if isinstance(preds, dict) else preds
    return (np.array([float(p["e"]) * len(a) for p, a in zip(preds, atoms)]),
            [np.asarray(p["f"], dtype=float) for p in preds])


def force_rmse(predicted: list[np.ndarray], reference: list[np.ndarray]) -> float:
    diff = np.concatenate([np.asarray(p) - np.asarray(r) for p, r in zip(predicted, reference)])
    return float(np.sqrt(np.mean(diff ** 2)))


def finetune_chgnet(records: list[dict], elements: list[str], s: FinetuneSettings):
    """CHGNet 0.3.0 fine-tuned on ``records`` with CHGNet's Trainer; returns (model, info)."""
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from pymatgen.io.ase import AseAtomsAdaptor
    from torch.utils.data import DataLoader

    torch.manual_seed(s.torch_seed)
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    atoms = records_to_atoms(records)
    real_e = np.array([float(r["energy"]) for r in records])
    real_f = [np.asarray(r["forces"], dtype=float) for r in records]
    raw_e, raw_f = _chgnet_predict(model, atoms, s.batch_size)
    shift = energy_shift(raw_e, real_e, [a.numbers for a in atoms], elements)
    target_e = real_e + np.array([sum(shift[sym] for sym in a.get_chemical_symbols())
                                  for a in atoms])
    data = StructureData([AseAtomsAdaptor.get_structure(a) for a in atoms],
                         energies=[float(e) / len(a) for e, a in zip(target_e, atoms)],
                         forces=[f.tolist() for f in real_f], shuffle=False)
    generator = torch.Generator().manual_seed(s.torch_seed)
    # every selected structure trains; "validation" (CHGNet's trainer needs one) is the same
    # structures in order: no other real structure is read, and the last epoch's weights
    # are kept (with so few structures a held-out choice of epoch would be noise)
    train_loader = DataLoader(data, batch_size=s.batch_size, collate_fn=collate_graphs,
                              shuffle=True, generator=generator)
    val_loader = DataLoader(data, batch_size=s.batch_size, collate_fn=collate_graphs)
    trainer = Trainer(model=model, targets="ef", energy_loss_ratio=s.energy_weight,
                      force_loss_ratio=s.force_weight, optimizer="Adam", scheduler="CosLR",
                      criterion="MSE", epochs=s.epochs, learning_rate=s.lr,
                      use_device="cpu", print_freq=1000, torch_seed=s.torch_seed,
                      data_seed=s.torch_seed)
    with tempfile.TemporaryDirectory(prefix="chgnet-ft-") as scratch:
        trainer.train(train_loader, val_loader, save_dir=scratch)
    tuned = trainer.model.to("cpu").eval()
    new_e, new_f = _chgnet_predict(tuned, atoms, s.batch_size)
    info = {"force_rmse_before": force_rmse(raw_f, real_f),
            "force_rmse_after": force_rmse(new_f, real_f),
            "energy_rmse_per_atom_before": _energy_rmse(raw_e, target_e, atoms),
            "energy_rmse_per_atom_after": _energy_rmse(new_e, target_e, atoms),
            "energy_shift": shift}
    return tuned, info


def _energy_rmse(pred: np.ndarray, ref: np.ndarray, atoms: list[Atoms]) -> float:
    n = np.array([len(a) for a in atoms], dtype=float)
    return float(np.sqrt(np.mean(((pred - ref) / n) ** 2)))


def run_teacher_finetune_job(settings: dict, pool_path: str, out: str) -> dict:
    """Rule ``teacher_finetune``: fine-tune ``settings['base']`` on the pool's subset and
    write the model (``out``, CHGNet's own file format) and ``<out>.json`` (which structures,
    errors before and after on them), both atomically."""
    from .real_data import subset_order
    from .shard_files import read_shard

    name, base = settings["name"], settings["base"]
    refuse_base(base, name)
    s = strict(FinetuneSettings, settings["finetune"], f"teachers.{name}.finetune")
    pool = read_shard(pool_path)
    if s.n > len(pool):
        raise ValueError(f"config field 'teachers.{name}.finetune.n' asks for {s.n} real "
                         f"structures but the real training pool {pool_path} has {len(pool)}")
    indices = [int(i) for i in subset_order(len(pool), s.seed)[:s.n]]
    model, info = finetune_chgnet([pool[i] for i in indices], settings["elements"], s)
    import torch

    with atomic_path(out) as tmp:
        torch.save({"model": model.as_dict(), "base": base,
                    "real_structures": len(indices)}, tmp)
    summary = {"teacher": name, "base": base, "pool": str(pool_path),
               "pool_indices": indices, "real_structures": len(indices),
               "settings": settings["finetune"], **info}
    write_json(f"{out}.json", summary)
    log.info("teacher %s: force RMSE on its %d structures %.3f -> %.3f eV/A", name,
             len(indices), info["force_rmse_before"], info["force_rmse_after"])
    return summary


def calculator(base: str, model_path: str | None = None, device: str = "cpu"):
    """The ASE calculator of a fine-tuned teacher (its ``Teacher.calculator`` factory)."""
    if not model_path:
        raise ValueError(f"fine-tuned teacher (base {base}) has no model file: rule "
                         f"teacher_finetune makes it (results/<run>/teachers/<name>/model.pth)")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"fine-tuned teacher model {model_path} not found (rule "
                                f"teacher_finetune makes it)")
    if base != "chgnet-0.3":
        refuse_base(base, Path(model_path).parent.name)
    from chgnet.model import CHGNet

    from .foundation import chgnet_calculator

    return chgnet_calculator(CHGNet.from_file(model_path), device)


def real_structures(model_path: str) -> int:
    """How many real structures a fine-tuned teacher file was trained on."""
    return int(json.loads(Path(f"{model_path}.json").read_text())["real_structures"])
