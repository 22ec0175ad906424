"""Training on a pair potential: the loss falls, resuming is exact and only of the same job,
non-finite losses fail, NVE conserves energy."""
import csv

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.morse import MorsePotential
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from defaults import model_config, train_config

from synthpre.calculator import SynthpreCalculator
from synthpre.model import NequIP
from synthpre.preemption import STOP_REQUESTED, Preempted, request_stop
from synthpre.predict import evaluate_metrics, predict
from synthpre.trainer import TrainingDiverged, mean_neighbors, train

MORSE = {"epsilon": 1.0, "rho0": 4.0, "r0": 1.55, "rcut1": 2.6, "rcut2": 3.2}

torch.set_num_threads(1)  # tiny graphs: extra OpenMP threads only contend


def carbon_records(n: int, seed: int) -> list[dict]:
    """Rattled, strained 8-atom diamond cells labelled by a Morse pair potential."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n):
        atoms = bulk("C", "diamond", a=3.57, cubic=True)
        atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0, 0.12, atoms.positions.shape)
        atoms.calc = MorsePotential(**MORSE)
        records.append({"numbers": atoms.numbers, "positions": atoms.positions,
                        "cell": atoms.cell.array, "pbc": atoms.pbc,
                        "energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                        "config_type": "rattled" if k % 2 else "strained"})
    return records


def tiny_model(records, dtype="float32", seed=0):
    torch.manual_seed(seed)
    return NequIP.from_config(model_config(**{"species": ["C"], "r_max": 3.2, "num_layers": 2,
                               "num_features": 8, "dtype": dtype,
                               "avg_num_neighbors": mean_neighbors(records, 3.2)}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train_recs, val_recs = carbon_records(10, 0), carbon_records(4, 1)
    model = tiny_model(train_recs, "float64")
    before = evaluate_metrics(model, val_recs)
    out = tmp_path_factory.mktemp("fit")
    cfg = train_config(max_epochs=30, batch_size=2, lr=1e-2, patience=1000)
    summary = train(model, train_recs, val_recs, cfg, out, meta={"e0": {"C": -1.5}})
    return model, before, summary, out, val_recs


def test_training_reduces_errors(trained):
    model, before, summary, out, val_recs = trained
    history = summary["history"]
    assert summary["epochs"] == 30 and len(history) == 30
    assert history[-1]["train_loss"] < 0.01 * history[0]["train_loss"]  # measured: 47 -> 0.11
    after = evaluate_metrics(model, val_recs)
    assert after["force_rmse"] < 0.1 * before["force_rmse"]  # measured: 7.1 -> 0.44 eV/Å
    assert after["force_rmse"] == pytest.approx(summary["best_val_force_rmse"], rel=1e-9)
    assert set(after["per_config_type"]) == {"rattled", "strained"}
    assert after["per_config_type"]["rattled"]["n_structures"] == 2
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and float(rows[-1]["val_force_rmse"]) > 0
    energy, forces = predict(model, val_recs[:1])[0]
    assert forces.shape == (8, 3) and isinstance(energy, float)


def _stop_in_epoch(records, cfg, epoch_to_stop):
    """An epoch -> batches source that asks the trainer to stop (as SIGTERM does) during the
    first batch of ``epoch_to_stop`` (read on the training thread: loader_workers 0)."""
    def batches(epoch):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(records))
        for k in range(0, len(records), cfg.batch_size):
            if epoch == epoch_to_stop and k == 0:
                request_stop()
            yield [records[i] for i in order[k:k + cfg.batch_size]]
    return batches


def test_changed_settings_do_not_resume_a_checkpoint(tmp_path, caplog):
    """A checkpoint of other settings (here another lr) is never continued: the training
    starts afresh, its first epoch runs at the new lr, and the log says why."""
    train_recs, val_recs = carbon_records(4, 2), carbon_records(2, 3)
    old = train_config(max_epochs=4, batch_size=2, lr=5e-3, loader_workers=0)
    with pytest.raises(Preempted):
        train(tiny_model(train_recs), _stop_in_epoch(train_recs, old, 3), val_recs, old,
              tmp_path, fingerprint={"lr": old.lr})
    STOP_REQUESTED.clear()
    new = train_config(max_epochs=3, batch_size=2, lr=1e-3, loader_workers=0)
    with caplog.at_level("INFO", logger="synthpre.trainer"):
        summary = train(tiny_model(train_recs), _stop_in_epoch(train_recs, new, None), val_recs,
                        new, tmp_path, fingerprint={"lr": new.lr})
    assert "belongs to another job (changed: lr): starting fresh" in caplog.text
    assert [h["lr"] for h in summary["history"]] == [1e-3] * 3
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    with open(tmp_path / "metrics.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == [1e-3] * 3
    straight = train(tiny_model(train_recs), _stop_in_epoch(train_recs, new, None), val_recs,
                     new, tmp_path / "straight", fingerprint={"lr": new.lr})
    assert [h["train_loss"] for h in summary["history"]] == \
        [h["train_loss"] for h in straight["history"]]


def test_finished_training_reruns_from_scratch(tmp_path, caplog):
    """A finished checkpoint whose output is gone (--force) trains again from fresh weights
    instead of handing back the old model."""
    train_recs, val_recs = carbon_records(4, 2), carbon_records(2, 3)
    cfg = train_config(max_epochs=2, batch_size=2)
    first = train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path)
    with caplog.at_level("INFO", logger="synthpre.trainer"):
        again = train(tiny_model(train_recs, seed=7), train_recs, val_recs, cfg, tmp_path)
    assert "finished training whose output was removed" in caplog.text
    assert again["epochs"] == 2
    assert [h["train_loss"] for h in again["history"]] != \
        [h["train_loss"] for h in first["history"]]  # other initial weights: really retrained


def test_non_finite_loss_fails_naming_epoch_and_data(tmp_path):
    train_recs, val_recs = carbon_records(4, 2), carbon_records(2, 3)
    train_recs[3]["energy"] = float("nan")
    cfg = train_config(max_epochs=2, batch_size=2)
    with pytest.raises(TrainingDiverged, match=r"pretrain on demo shards, epoch 1, batch \d: "
                                               r"the training loss is nan"):
        train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path,
              name="pretrain on demo shards")
    assert not (tmp_path / "model.pt").exists()


def test_preemption_mid_epoch_resumes_exactly(tmp_path):
    """SLURM's warning signal mid-epoch: checkpoint after the current batch, stop, and a new
    call continues from that batch to the same weights as an uninterrupted run."""
    train_recs, val_recs = carbon_records(8, 6), carbon_records(2, 7)
    cfg = train_config(max_epochs=3, batch_size=2, val_batch_size=2, loader_workers=0)

    def batches(epoch, stop_at=None):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_recs))
        for k in range(0, 8, 2):
            if (epoch, k // 2) == stop_at:
                request_stop()  # as if SIGUSR1 arrived while this batch trains
            yield [train_recs[i] for i in order[k:k + 2]]

    train(tiny_model(train_recs), batches, val_recs, cfg, tmp_path / "straight")
    with pytest.raises(Preempted, match="epoch 2 after batch 2"):
        train(tiny_model(train_recs), lambda e: batches(e, stop_at=(2, 1)), val_recs, cfg,
              tmp_path / "resumed")
    STOP_REQUESTED.clear()
    mid = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["state"]
    assert (mid["epoch"], mid["batches_done"]) == (1, 2)
    train(tiny_model(train_recs, seed=7), batches, val_recs, cfg, tmp_path / "resumed")
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)
            for d in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in a["state"]["history"]] == \
        [h["train_loss"] for h in b["state"]["history"]]


def test_a_signal_with_a_loader_worker_resumes_to_the_same_weights(tmp_path):
    """With the graphs built in a DataLoader worker (batches read ahead), SLURM's signal still
    stops the trainer after the batch it is on, and the resumed run, skipping what was
    trained, ends with the weights of an uninterrupted one."""
    import os
    import signal

    train_recs, val_recs = carbon_records(8, 6), carbon_records(2, 7)
    cfg = train_config(max_epochs=3, batch_size=2, val_batch_size=2, loader_workers=1)
    trainer_pid = os.getpid()

    def batches(epoch, signal_at=None):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_recs))
        for k in range(0, 8, 2):
            if (epoch, k // 2) == signal_at:
                assert os.getpid() != trainer_pid  # read in the worker process
                os.kill(trainer_pid, signal.SIGUSR1)
            yield [train_recs[i] for i in order[k:k + 2]]

    train(tiny_model(train_recs), batches, val_recs, cfg, tmp_path / "straight")
    previous = signal.signal(signal.SIGUSR1, request_stop)
    try:
        with pytest.raises(Preempted, match="epoch 2 after batch"):
            train(tiny_model(train_recs), lambda e: batches(e, signal_at=(2, 0)), val_recs, cfg,
                  tmp_path / "resumed")
    finally:
        signal.signal(signal.SIGUSR1, previous)
        STOP_REQUESTED.clear()
    train(tiny_model(train_recs, seed=7), batches, val_recs, cfg, tmp_path / "resumed")
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)
            for d in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_streaming_source_matches_list(tmp_path):
    """A callable epoch -> batches of records trains exactly like the same batches from a list,
    whether a DataLoader worker builds its graphs or the training thread does."""
    train_recs, val_recs = carbon_records(6, 4), carbon_records(2, 5)
    cfg = train_config(max_epochs=2, batch_size=3, val_batch_size=2, loader_workers=1)
    train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path / "list")

    def epoch_batches(epoch):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_recs))
        return [[train_recs[i] for i in order[k:k + 3]] for k in range(0, 6, 3)]

    train(tiny_model(train_recs), epoch_batches, val_recs, cfg, tmp_path / "stream")
    train(tiny_model(train_recs), epoch_batches, val_recs, replace(cfg, loader_workers=0),
          tmp_path / "stream0")
    a, b, c = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["ema"]
               for d in ("list", "stream", "stream0"))
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_early_stopping(tmp_path):
    """With lr 0 nothing improves: stop after `patience` epochs, and a rerun repeats it."""
    train_recs, val_recs = carbon_records(2, 6), carbon_records(2, 7)
    cfg = train_config(max_epochs=50, lr=0.0, patience=3)
    summary = train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path)
    assert summary["stop_reason"] == "patience"
    assert summary["epochs"] == 4 and summary["best_epoch"] == 1
    again = train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path)
    assert again["epochs"] == 4
    assert [h["train_loss"] for h in again["history"]] == \
        [h["train_loss"] for h in summary["history"]]


def test_min_steps_gives_small_and_large_n_the_same_steps(tmp_path):
    """The budget counts gradient steps: n=3 (one step an epoch) trains as many steps as n=30
    (ten an epoch), and patience cannot stop either before min_steps."""
    val_recs = carbon_records(2, 7)
    cfg = train_config(max_epochs=1, min_steps=20, batch_size=3, patience=1, lr=0.0)
    runs = {n: train(tiny_model(carbon_records(n, 8)), carbon_records(n, 8), val_recs, cfg,
                     tmp_path / f"n{n}") for n in (3, 30)}
    assert runs[3]["steps"] == runs[30]["steps"] == 20
    assert (runs[3]["epochs"], runs[30]["epochs"]) == (20, 2)
    assert runs[3]["stop_reason"] == runs[30]["stop_reason"] == "patience"
    plain = train(tiny_model(carbon_records(3, 8)), carbon_records(3, 8), val_recs,
                  train_config(max_epochs=1, batch_size=3), tmp_path / "plain")
    assert (plain["steps"], plain["stop_reason"]) == (1, "max_epochs")


def test_nve_conserves_energy(trained):
    """Velocity Verlet near the potential's minimum: the total energy error stays tiny."""
    out = trained[3]
    atoms = bulk("C", "diamond", a=3.57, cubic=True).repeat((2, 1, 1))
    atoms.calc = SynthpreCalculator(out / "model.pt")
    assert atoms.calc.model.dtype == torch.float64
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    total, kinetic = [], []
    dyn.attach(lambda: (total.append(atoms.get_total_energy()),
                        kinetic.append(atoms.get_kinetic_energy())))
    dyn.run(100)
    assert np.ptp(kinetic) > 0.05  # the atoms really move and exchange energy
    print("NVE: total energy range", np.ptp(total), "kinetic range", np.ptp(kinetic))
    assert np.ptp(total) < 0.005 * np.ptp(kinetic), (np.ptp(total), np.ptp(kinetic))
