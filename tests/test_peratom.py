"""Per-atom energy labels (issue 22): local energies from the teacher, shifted by the
species' isolated-atom energies like the total, so they sum to the stored frame energy."""
from __future__ import annotations

import numpy as np
from ase.build import bulk

from synthpre.frames import ATOMIC_ENERGIES_KEY, read_frames, write_frames
from synthpre.label import label_frames
from synthpre.teachers import get_teacher


def _sic_cell(seed: int):
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.08, seed=seed)
    return atoms


def test_per_atom_energies_sum_to_the_energy_and_round_trip(tmp_path):
    # two species in a periodic cell with a teacher covering both (Tersoff Si-C), and SNAP
    frames = [_sic_cell(1), _sic_cell(2)]
    labelled = label_frames(frames, get_teacher("tersoff"))
    carbon = bulk("C", "diamond", a=3.57, cubic=True)
    carbon.rattle(0.1, seed=3)
    labelled += label_frames([carbon], get_teacher("snap_c"))
    for atoms in labelled:
        e_i = atoms.arrays[ATOMIC_ENERGIES_KEY]
        assert e_i.shape == (len(atoms),)
        assert abs(e_i.sum() - atoms.info["energy"]) < 1e-8
        assert np.ptp(e_i) > 1e-4  # local, not the total spread evenly
    # Si and C atoms are shifted by their own E0: the per-species means differ by far more
    # than the rattle could make them
    symbols = np.array(labelled[0].get_chemical_symbols())
    e_i = labelled[0].arrays[ATOMIC_ENERGIES_KEY]
    assert abs(e_i[symbols == "Si"].mean() - e_i[symbols == "C"].mean()) > 0.1
    path = tmp_path / "labels.extxyz"
    write_frames(path, labelled)
    back = read_frames(path)
    for a, b in zip(labelled, back):
        np.testing.assert_allclose(b.arrays[ATOMIC_ENERGIES_KEY], a.arrays[ATOMIC_ENERGIES_KEY],
                                   rtol=0, atol=1e-8)
