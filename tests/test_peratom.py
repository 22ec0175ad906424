"""Per-atom energy labels (issue 22): local energies from the teacher, shifted by the
species' isolated-atom energies like the total, so they sum to the stored frame energy."""
from __future__ import annotations

import numpy as np
import pytest
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


def test_alchemical_transform_scales_per_atom_energies_with_the_total():
    from synthpre.alchemical import Alchemical

    alch = Alchemical.from_config("x", {"teacher": "tersoff", "from": "Si", "to": "C",
                                        "scale": 0.7, "energy_scale": 1.3,
                                        "forces": "gradient"})
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.1, seed=4)
    (source,) = label_frames([si], get_teacher("tersoff"))
    frame = alch.transform(source)
    np.testing.assert_allclose(frame.arrays[ATOMIC_ENERGIES_KEY],
                               1.3 * source.arrays[ATOMIC_ENERGIES_KEY], rtol=1e-12)
    assert abs(frame.arrays[ATOMIC_ENERGIES_KEY].sum() - frame.info["energy"]) < 1e-8


def test_per_atom_energies_round_trip_through_shards_and_are_all_or_none(tmp_path):

    from synthpre.frames import to_record
    from synthpre.shard_files import read_shard, sha256, write_shard

    labelled = label_frames([_sic_cell(1), _sic_cell(2)], get_teacher("tersoff"))
    records = [to_record(a, "labels.extxyz", i, atomic_energies=True)
               for i, a in enumerate(labelled)]
    write_shard(tmp_path / "a.h5", records)
    back = read_shard(tmp_path / "a.h5")
    for atoms, record in zip(labelled, back):
        np.testing.assert_array_equal(record["energies"], atoms.arrays[ATOMIC_ENERGIES_KEY])
        assert abs(record["energies"].sum() - record["energy"]) < 1e-8
    # the checksum covers the dataset: other per-atom energies, other file hash
    records[0]["energies"] = records[0]["energies"] + np.array([1.0] + [-1.0 / 15] * 15)
    write_shard(tmp_path / "b.h5", records)
    assert sha256(tmp_path / "b.h5") != sha256(tmp_path / "a.h5")
    # real-data records (default) and labellers without them: no dataset
    write_shard(tmp_path / "c.h5", [to_record(a, "x", i) for i, a in enumerate(labelled)])
    assert all("energies" not in r for r in read_shard(tmp_path / "c.h5"))
    records[1].pop("energies")
    with pytest.raises(ValueError, match=r"1 of 2 records have per-atom 'energies'"):
        write_shard(tmp_path / "d.h5", records)


def _model_and_batch(species=("C", "Si")):
    import torch

    from defaults import model_config
    from synthpre.frames import to_record
    from synthpre.graph import collate
    from synthpre.model import NequIP

    labelled = label_frames([_sic_cell(1), _sic_cell(2)], get_teacher("tersoff"))
    records = [to_record(a, "x", i, atomic_energies=True) for i, a in enumerate(labelled)]
    torch.manual_seed(0)
    model = NequIP.from_config(model_config(species=list(species), num_layers=1,
                                            num_features=8, dtype="float64"))
    return model, collate(records, list(species), model.r_max, model.dtype), records


def test_per_atom_term_is_off_at_zero_and_pulls_atomic_energies_to_the_labels():
    import torch

    from synthpre.trainer import loss_fn

    model, batch, _ = _model_and_batch()
    out = model(batch)
    # weight 0: the very loss of before (the term is not even added)
    assert torch.equal(loss_fn(out, batch, 4.0), loss_fn(out, batch, 4.0, None, 0.0))
    assert loss_fn(out, batch, 4.0, None, 2.0) > loss_fn(out, batch, 4.0)

    def atomic_rmse_after(weight, steps=100):
        torch.manual_seed(0)
        m, b, _ = _model_and_batch()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(m(b), b, 1.0, None, weight).backward()
            opt.step()
        return float((m(b)["atomic_energy"] - b.atomic_energy).detach().pow(2).mean().sqrt())

    before = float((out["atomic_energy"] - batch.atomic_energy).detach().pow(2).mean().sqrt())
    with_term, without = atomic_rmse_after(100.0), atomic_rmse_after(0.0)
    assert with_term < 0.5 * before
    assert with_term < 0.5 * without


def test_pretraining_with_the_term_names_a_shard_without_per_atom_energies(tmp_path):

    from defaults import DEFAULTS
    from synthpre import job_settings
    from synthpre.frames import to_record
    from synthpre.shard_files import write_shard
    from synthpre.train import require_atomic_energies

    labelled = label_frames([_sic_cell(1)], get_teacher("tersoff"))
    write_shard(tmp_path / "with.h5", [to_record(labelled[0], "x", 0, atomic_energies=True)])
    write_shard(tmp_path / "train-00000.h5", [to_record(labelled[0], "x", 0)])
    info = {"labeller": "chgnet-ft"}
    require_atomic_energies([str(tmp_path / "with.h5")], info)
    with pytest.raises(ValueError, match=r"shard .*train-00000\.h5 \(labeller chgnet-ft\) has "
                                         r"no per-atom energies"):
        require_atomic_energies([str(tmp_path / "with.h5"), str(tmp_path / "train-00000.h5")],
                                info)
    # the weight reaches pre-training's settings (its rule's params) only when on: a study
    # without it keeps its params; fine-tuning never gets it
    off = job_settings.train(DEFAULTS, "pretrain")
    assert "per_atom_energy_weight" not in off["train"]
    on_config = {**DEFAULTS, "pretrain": {**DEFAULTS["pretrain"], "per_atom_energy_weight": 0.5}}
    assert job_settings.train(on_config, "pretrain")["train"]["per_atom_energy_weight"] == 0.5
    assert job_settings.train(on_config, "finetune") == job_settings.train(DEFAULTS, "finetune")


def test_an_ase_calculator_with_energies_gives_them():
    emt = get_teacher("emt", {"emt": {"kind": "ase", "calculator": "ase.calculators.emt:EMT",
                                      "elements": ["Cu", "Al"]}})
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.symbols[[1, 4]] = "Al"
    cell.rattle(0.05, seed=1)
    (frame,) = label_frames([cell], emt)
    e_i = frame.arrays[ATOMIC_ENERGIES_KEY]
    assert abs(e_i.sum() - frame.info["energy"]) < 1e-8 and np.ptp(e_i) > 1e-3


def test_foundation_teachers_give_per_atom_energies_one_by_one_and_batched():
    """SevenNet-0 and CHGNet (site energies) on an 8-atom Li4Si4 cell: per-atom labels that
    sum to the frame's energy, and the batched path (the GPU one, run here on the CPU) gives
    the same ones; per-atom energies that miss the total fail, naming the teacher."""
    import torch

    from synthpre.cells import random_cell
    from synthpre.foundation import label_batch
    from synthpre.teachers import checked_atomic_energies

    torch.set_num_threads(1)
    frames = [random_cell({"Li": 4, "Si": 4}, 1.6, 1.6, seed=k) for k in range(2)]
    for name in ("sevennet-0", "chgnet-0.3"):
        labelled = label_frames(frames, get_teacher(name))
        symbols = frames[0].get_chemical_symbols()
        e0 = np.array([labelled[0].info[f"e0_{s}"] for s in symbols])
        _, _, batched = label_batch(get_teacher(name).make_calculator(), frames, batch_size=2)
        for frame, e_batch in zip(labelled, batched):
            e_i = frame.arrays[ATOMIC_ENERGIES_KEY]
            assert abs(e_i.sum() - frame.info["energy"]) < 1e-8, name
            assert np.ptp(e_i) > 1e-2, name  # the model's own, not the total spread evenly
            np.testing.assert_allclose(e_batch - e0, e_i, rtol=0, atol=1e-4, err_msg=name)
    with pytest.raises(ValueError, match=r"teacher chgnet-0.3: per-atom energies \(8 for 8 "
                                         r"atoms, sum -1.0\) do not add up to its energy -0.9"):
        checked_atomic_energies("chgnet-0.3", -0.9, np.full(8, -0.125), 8)


@pytest.mark.slow
def test_turning_the_term_on_in_a_finished_study_reruns_pretraining_which_trains_with_it(
        tiny_run, tmp_path):
    """pretrain.per_atom_energy_weight: 1 on the finished tiny study plans pre-training and
    what follows, never MD, labels, shards or real data; the pre-training job then trains with
    the term on the shards' per-atom energies (a finite validation per-atom RMSE each epoch)."""
    import shutil

    import torch
    import yaml
    from snakemake_run import planned_jobs, snakemake

    workdir = tmp_path / "run"  # a copy: the shared finished run stays as it is
    shutil.copytree(tiny_run, workdir, symlinks=True)
    # tiny: 2 labellers x 2 pre-training sizes = 4 pre-trained models, each fine-tuned at 2 n
    # (1 seed), evaluated at n = 0, and run in stability MD
    assert planned_jobs(workdir, pretrain={"per_atom_energy_weight": 1}) == {
        "pretrain": 4, "finetune": 8, "evaluate": 8, "evaluate_pretrained": 4, "aggregate": 1,
        "stability": 12, "stability_curves": 1}
    override = yaml.safe_load((workdir / "override.yaml").read_text())
    (workdir / "override.yaml").write_text(
        yaml.safe_dump({**override, "pretrain": {"per_atom_energy_weight": 1}}))
    run = workdir / "results/tiny/pretrain/lcbop/k4"
    before = (run / "train/metrics.csv").read_text()
    snakemake(workdir, "--cores", "1", targets=("results/tiny/pretrain/lcbop/k4/model.pt",))
    rows = (run / "train/metrics.csv").read_text().splitlines()
    assert "val_atomic_energy_rmse" not in before and rows != before.splitlines()
    header = rows[0].split(",")
    column = header.index("val_atomic_energy_rmse")
    values = [float(r.split(",")[column]) for r in rows[1:]]
    assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values), rows
    meta = torch.load(run / "model.pt", weights_only=True)["meta"]
    assert meta["settings"]["train"]["per_atom_energy_weight"] == 1
