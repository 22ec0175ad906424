"""Replay fine-tuning: synthetic frames of the model's own pre-training data mixed into every
fine-tuning batch with a loss weight, against catastrophic forgetting (MACE's multihead
replay fine-tuning does the same with its pre-training heads).

Batches. Every fine-tuning batch keeps its real structures (so the real data per step and
the number of gradient steps are those of plain fine-tuning) and gets synthetic ones added
until they are ``fraction`` of the batch (rounded, at least one). The draw is fixed by
(seed, epoch, batch), so a resumed training sees the same batches; a pool smaller than one
draw is sampled with replacement, so the fraction always holds.

Energy reference. Synthetic energies are relative to the teacher's isolated atoms, real ones
to the DFT reference. With ``finetune.fit_shift`` the fine-tuning job first moves the model's
per-species shift by Δ (``train.fit_shift``), a fixed buffer while it trains. Replay frames
get their energy labels moved by the same Δ (E + Σ_s Δ_s N_s): the pre-trained model's
residuals on them are then exactly what they were before the shift changed, so the replay
loss penalises drift of the learned energy surface (energies and forces) and not the change
of reference. Forces-only replay would avoid the question too, but would drop the energy
differences between synthetic structures that pre-training taught. Without ``fit_shift``,
Δ = 0: the paper's premise that both references are one scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .composition import species_counts


@dataclass
class Replay:
    """Synthetic records (energies already in the fine-tuned model's reference) and how many
    of them go into each batch, with what loss weight."""

    records: list[dict]
    fraction: float
    weight: float
    seed: int

    def __post_init__(self):
        if not self.records:
            raise ValueError("replay fine-tuning needs synthetic training structures; the "
                             "pre-training data has none")

    def count(self, n_real: int) -> int:
        """Synthetic structures added to a batch of ``n_real`` real ones."""
        return max(1, round(n_real * self.fraction / (1.0 - self.fraction)))

    def draw(self, epoch: int, batch: int, n_real: int) -> list[dict]:
        """The synthetic structures of batch ``batch`` of ``epoch``."""
        k = self.count(n_real)
        rng = np.random.default_rng([self.seed, epoch, batch])
        picks = rng.choice(len(self.records), k, replace=k > len(self.records))
        return [self.records[i] for i in picks]


def shift_energies(records: list[dict], shift_change: dict[str, float]) -> list[dict]:
    """Copies of ``records`` whose energies moved by Σ_s Δ_s N_s (Δ: the model's shift change,
    {symbol: eV/atom}); the arrays are shared, not copied."""
    if not records or not shift_change:
        return list(records)
    counts = species_counts([r["numbers"] for r in records], list(shift_change))
    deltas = counts @ np.array(list(shift_change.values()), dtype=float)
    return [{**r, "energy": float(r["energy"]) + float(d)} for r, d in zip(records, deltas)]
