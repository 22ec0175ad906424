"""Universal ("foundation") potentials as teachers: for chemistries with no bespoke potential.

SevenNet-0 and CHGNet 0.3.0 ship their weights inside their PyPI wheels, so they work with no
download (MACE-MP, MatterSim, Orb, UMA fetch theirs at run time). Both were trained on the
Materials Project's PBE(+U) relaxation trajectories (MPtrj): a student trained on their labels
inherits that functional and the models' errors. They enter the pipeline as ASE teachers
(``synthpre.teachers``, kind ``ase``): LAMMPS integrates, ``fix external`` asks them for
forces, and labelling calls them directly, in batches (``label_batch``).

Element coverage is written out here (checked against the shipped models by the tests), so a
config asking for an element outside it is refused before any job starts, without loading
the model.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

# SevenNet-0 (11Jul2024): its type map, Z = 1-83 (H-Bi) and 89-94 (Ac-Pu).
SEVENNET_0_ELEMENTS = chemical_symbols[1:84] + chemical_symbols[89:95]
# CHGNet 0.3.0: Z = 1-94 (its atom embedding and composition model have 94 entries).
CHGNET_0_3_ELEMENTS = chemical_symbols[1:95]


def sevennet(model: str = "7net-0", device: str = "cpu"):
    """SevenNet's ASE calculator; ``7net-0`` is the checkpoint in the wheel (MIT licence)."""
    import warnings

    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():  # "no tensor-product accelerator": none exists on CPU
        warnings.simplefilter("ignore", UserWarning)
        return SevenNetCalculator(model, device=device)


def chgnet(model: str = "0.3.0", device: str = "cpu"):
    """CHGNet's ASE calculator, weights from the wheel (modified BSD licence). A lone atom
    (the isolated-atom reference) has no bonds; CHGNet then returns its per-element
    reference energy, which is what E0 should be, so that case is not an error."""
    from chgnet.model import CHGNet

    return chgnet_calculator(CHGNet.load(model_name=model, use_device=device, verbose=False),
                             device)


def chgnet_calculator(net, device: str = "cpu"):
    """The ASE calculator of a CHGNet model (the shipped one or a fine-tuned file). Its site
    energies are on: they come from the same forward pass as the energy (CHGNet reads its
    energy out atom by atom, then adds each element's reference), so labels carry per-atom
    energies at no extra model call."""
    from chgnet.model import CHGNetCalculator

    return CHGNetCalculator(model=net, use_device=device, on_isolated_atoms="ignore",
                            return_site_energies=True)


def on_gpu(calculator) -> bool:
    """Batching pays on a GPU only: on one CPU core it was slower than frame by frame
    (docs/benchmarks.md), so labelling batches only when the calculator runs on CUDA."""
    return str(getattr(calculator, "device", "cpu")).startswith("cuda")


def label_batch(calculator, frames: list[Atoms], batch_size: int = 16):
    """(energies, forces, per-atom energies) for many frames per model call, or None when
    ``calculator`` has no batched path (then callers label frame by frame). Batching amortises
    Python and graph overhead over frames; ``benchmarks/bench_foundation.py`` measures what it
    gains. Per-atom energies are the model's own, unchecked (callers check them as they check
    one frame's)."""
    name = type(calculator).__name__
    if name == "CHGNetCalculator":
        return _chgnet_batch(calculator, frames, batch_size)
    if name == "SevenNetCalculator":
        return _sevennet_batch(calculator, frames, batch_size)
    return None


def _chgnet_batch(calculator, frames, batch_size):
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = [AseAtomsAdaptor.get_structure(a) for a in frames]
    preds = calculator.model.predict_structure(structures, task="ef", batch_size=batch_size,
                                               return_site_energies=True)
    preds = [preds] if isinstance(preds, dict) else preds
    # CHGNet predicts energy per atom
    energies = [float(p["e"]) * len(a) for p, a in zip(preds, frames)]
    return (energies, [np.asarray(p["f"], dtype=float) for p in preds],
            [np.asarray(p["site_energies"], dtype=float) for p in preds])


def _sevennet_batch(calculator, frames, batch_size):
    import sevenn._keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from torch_geometric.data import Batch

    model = calculator.model
    energies, forces, atomic = [], [], []
    model.set_is_batch_data(True)
    try:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            graphs = [AtomGraphData.from_numpy_dict(
                unlabeled_atoms_to_graph(a, calculator.cutoff, with_shift=False))
                for a in chunk]
            batch = Batch.from_data_list(graphs).to(calculator.device)
            out = model(batch)
            f = out[KEY.PRED_FORCE].detach().cpu().numpy()
            e_i = out[KEY.ATOMIC_ENERGY].detach().cpu().numpy().reshape(-1)
            offsets = np.cumsum([0] + [len(a) for a in chunk])
            energies += out[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().ravel().tolist()
            forces += [f[offsets[i]:offsets[i + 1]].astype(float) for i in range(len(chunk))]
            atomic += [e_i[offsets[i]:offsets[i + 1]].astype(float) for i in range(len(chunk))]
    finally:
        model.set_is_batch_data(False)
    return [float(e) for e in energies], forces, atomic
