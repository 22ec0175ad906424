"""Frozen-layer fine-tuning: which weights of a pre-trained model keep their values.

As MACE's ``--freeze`` and graph-pes's freeze options, the model is frozen from its input
side: the species embedding and the radial (Bessel) basis, which every interaction layer
reads, then the first k interaction layers. ``all`` freezes every interaction layer and
leaves the readout head (plus the energy shift that ``train.fit_shift`` sets) to learn.
Frozen parameters get ``requires_grad = False``; the trainer leaves them out of the
optimiser, so they keep their pre-trained values exactly.
"""
from __future__ import annotations

from .model import NequIP


def freeze(model: NequIP, layers: int | str) -> list[str]:
    """Freeze the input side of ``model`` and its first ``layers`` interaction layers
    (``"all"``: every one); returns the names of the frozen parameters."""
    count = len(model.layers) if layers == "all" else int(layers)
    if not 1 <= count <= len(model.layers):
        raise ValueError(f"config field 'finetune.freeze_layers' is {layers} but the model has "
                         f"{len(model.layers)} interaction layers (model.num_layers)")
    prefixes = ("embedding.", "bessel.") + tuple(f"layers.{i}." for i in range(count))
    frozen = []
    for name, parameter in model.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
