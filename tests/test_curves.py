"""Learning-curve arithmetic: data efficiency on a hand-made curve (the paper's numbers)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from synthpre.aggregate import add_data_efficiency, equivalent_n

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
