"""Learning-curve arithmetic on hand-made inputs: data efficiency (the paper's numbers), the
forgetting columns and the heat map's grid."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from synthpre.aggregate import (FORGETTING, add_data_efficiency, equivalent_n, learning_curve,
                                size_grid)

# The paper's direct-fit force RMSE (eV/Å) at n = 25, 100, 400, 3200.
SCRATCH_N, SCRATCH_F = [25, 100, 400, 3200], [1.27, 1.05, 0.90, 0.71]


def test_equivalent_n_interpolates_in_log_log():
    assert equivalent_n(SCRATCH_N, SCRATCH_F, 1.05) == (pytest.approx(100.0), "interpolated")
    halfway = math.exp((math.log(1.05) + math.log(0.90)) / 2)  # midway in log error
    assert equivalent_n(SCRATCH_N, SCRATCH_F, halfway) == (pytest.approx(200.0), "interpolated")
    # the paper's pre-trained n=25 (0.86 eV/Å) sits between scratch 400 and 3200
    n, how = equivalent_n(SCRATCH_N, SCRATCH_F, 0.86)
    assert how == "interpolated" and 400 < n < 3200
    assert n == pytest.approx(400 * 8 ** (math.log(0.86 / 0.90) / math.log(0.71 / 0.90)))


def test_equivalent_n_outside_the_curve():
    n, how = equivalent_n(SCRATCH_N, SCRATCH_F, 0.60)  # better than every scratch point
    slope = math.log(0.71 / 0.90) / math.log(8)
    assert how == "extrapolated" and n == pytest.approx(3200 * math.exp(math.log(0.60 / 0.71) / slope))
    assert equivalent_n([10, 40], [1.0, 1.2], 0.5) == (None, "not reached")  # scratch got worse


def test_data_efficiency_columns_only_for_pretrained_rows():
    rows = [{"mode": "scratch", "labeller": "none", "n": n, "test_force_rmse_mean": f,
             "test_energy_rmse_per_atom_mean": f / 10} for n, f in zip(SCRATCH_N, SCRATCH_F)]
    rows.append({"mode": "finetune", "labeller": "ace", "n": 25, "test_force_rmse_mean": 1.05,
                 "test_energy_rmse_per_atom_mean": 0.09})
    table = add_data_efficiency(pd.DataFrame(rows))
    pre = table[table["mode"] == "finetune"].iloc[0]
    assert pre["scratch_n_equivalent_force"] == pytest.approx(100.0)
    assert pre["scratch_n_equivalent_energy_how"] == "interpolated"
    assert table[table["mode"] == "scratch"]["scratch_n_equivalent_force"].isna().all()


def _metrics_rows():
    """Hand-made metrics: scratch and two fine-tuning modes from one pre-trained size."""
    rows = []
    for seed, bump in ((1, 0.0), (2, 0.2)):
        for n in (10, 40):
            base = {"n": n, "seed": seed, "steps": 120, "epochs": 30, "best_epoch": 30,
                    "train_wall_s": 1.0, "stop_reason": "max_epochs",
                    "test_energy_rmse_per_atom": 0.1, "metrics_file": f"{n}-{seed}"}
            rows.append({**base, "mode": "scratch", "labeller": "none", "n_pretrain": 0,
                         "test_force_rmse": 1.6 - n / 100 + bump,
                         **{k: None for k in FORGETTING}})
            for mode, forgot in (("finetune", 0.9), ("replay", 0.5)):
                rows.append({**base, "mode": mode, "labeller": "snap_c", "n_pretrain": 63,
                             "test_force_rmse": 1.4 - n / 100 + bump,
                             "synthetic_val_force_rmse": forgot + bump,
                             "synthetic_val_energy_rmse_per_atom": forgot / 10,
                             "pretrained_synthetic_val_force_rmse": 0.4,
                             "pretrained_synthetic_val_energy_rmse_per_atom": 0.04})
    return pd.DataFrame(rows)


def test_forgetting_columns_are_means_and_spreads_over_seeds():
    table = learning_curve(_metrics_rows()).set_index(["mode", "n"])
    replay = table.loc[("replay", 10)]
    assert replay["synthetic_val_force_rmse_mean"] == pytest.approx(0.6)
    assert replay["synthetic_val_force_rmse_std"] == pytest.approx(0.2 / math.sqrt(2))
    assert replay["pretrained_synthetic_val_force_rmse_mean"] == pytest.approx(0.4)
    assert table.loc[("finetune", 40)]["synthetic_val_energy_rmse_per_atom_mean"] == \
        pytest.approx(0.09)
    assert math.isnan(table.loc[("scratch", 10)]["synthetic_val_force_rmse_mean"])


def test_heat_map_grid_has_scratch_as_row_zero_and_one_mode():
    table = learning_curve(_metrics_rows())
    grid = size_grid(table, "replay", "snap_c")
    assert list(grid.index) == [0, 63] and list(grid.columns) == [10, 40]
    assert grid.loc[0, 10] == pytest.approx(1.6)  # scratch, mean of 1.5 and 1.7
    assert grid.loc[63, 40] == pytest.approx(1.1)  # replay at n=40: 1.0 and 1.2


def _pretrained_model_and_real(tmp_path, offset_per_atom=6.0):
    """A (random-weight) 'pre-trained' model file with a training record, and a real data
    folder whose energies sit ``offset_per_atom`` eV/atom from the model's reference."""
    from test_trainer import carbon_records, tiny_model

    from synthpre.modelfile import save_model
    from synthpre.shard_files import write_shard

    records = carbon_records(12, 0)
    for r in records:
        r["energy"] += offset_per_atom * len(r["numbers"])
    real = tmp_path / "real"
    for name, part in (("test", records[:4]), ("val", records[4:6]), ("pool", records[6:])):
        write_shard(real / f"{name}.h5", part, {"e0_json": '{"C": 0.0}'})
    record = {"epochs": 7, "steps": 70, "best_epoch": 5, "stop_reason": "max_epochs",
              "wall_time_s": 12.0, "n_parameters": 1, "n_pretrain": 63, "e0": {"C": 0.0}}
    save_model(tmp_path / "model.pt", tiny_model(records), record)
    return tmp_path / "model.pt", real


def test_the_n0_point_is_the_pretrained_model_as_fine_tuning_starts_it(tmp_path):
    """pretrained/<labeller>/n0/s<seed>: no fine-tuning budget; with fit_shift the energy
    shift is fitted to the seed's smallest subset first, which moves energies, not forces."""
    from synthpre.evaluate import run_evaluate_job

    model, real = _pretrained_model_and_real(tmp_path)
    args = (str(model), str(real / "test.h5"), str(real / "val.h5"), "pretrained/snap_c/n0/s1")
    plain = run_evaluate_job(*args, str(tmp_path / "a.json"), str(tmp_path / "a.npz"))
    shifted = run_evaluate_job(*args, str(tmp_path / "b.json"), str(tmp_path / "b.npz"),
                               real_dir=str(real), shift_n=3)
    for m in (plain, shifted):
        assert (m["mode"], m["labeller"], m["n"], m["seed"]) == ("pretrained", "snap_c", 0, 1)
        assert (m["steps"], m["epochs"], m["n_pretrain"]) == (0, 0, 63)
    assert shifted["shift_fitted_on_n"] == 3 and plain["shift_fitted_on_n"] == 0
    assert shifted["test_force_rmse"] == pytest.approx(plain["test_force_rmse"], rel=1e-6)
    assert plain["test_energy_rmse_per_atom"] > 2.0  # Morse -3 + 6 eV/atom, unfitted
    assert shifted["test_energy_rmse_per_atom"] < 0.5 * plain["test_energy_rmse_per_atom"]
    with pytest.raises(ValueError, match="pretrained/<labeller>"):
        run_evaluate_job(str(model), str(real / "test.h5"), str(real / "val.h5"),
                         "pretrained/snap_c/n3/s1", str(tmp_path / "c.json"),
                         str(tmp_path / "c.npz"))


def test_the_n0_row_is_in_the_learning_curve_and_a_marker_on_the_plot(tmp_path):
    from synthpre.aggregate import plot

    rows = _metrics_rows()
    for seed, bump in ((1, 0.0), (2, 0.2)):
        rows.loc[len(rows)] = {
            "mode": "pretrained", "labeller": "snap_c", "n_pretrain": 63, "n": 0, "seed": seed,
            "steps": 0, "epochs": 0, "best_epoch": 0, "train_wall_s": 0.0,
            "stop_reason": "not fine-tuned", "test_energy_rmse_per_atom": 0.2,
            "test_force_rmse": 1.7 + bump, "metrics_file": f"0-{seed}",
            **{k: None for k in FORGETTING}}
    table = learning_curve(rows)
    (zero,) = table[table["n"] == 0].to_dict("records")
    assert zero["mode"] == "pretrained" and zero["n_seeds"] == 2
    assert zero["test_force_rmse_mean"] == pytest.approx(1.8)
    assert zero["scratch_n_equivalent_force_how"] in ("interpolated", "extrapolated",
                                                      "not reached")
    plot(table, tmp_path / "c.png", tmp_path / "c.svg")
    svg = (tmp_path / "c.svg").read_text()
    assert "pre-trained, n=0 (snap_c, 63 synthetic)" in svg  # the star's legend entry
