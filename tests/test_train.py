"""Fine-tuning jobs: compatibility checks that name both sides, and the shift re-fit."""
from __future__ import annotations

import numpy as np
import pytest
from defaults import model_config
from test_trainer import carbon_records

from synthpre.model import NequIP
from synthpre.modelfile import save_model
from synthpre.train import check_compatible, fit_shift
from synthpre.predict import predict


def small_model(species=("C",), r_max=4.0):
    return NequIP.from_config(model_config(**{"species": list(species), "r_max": r_max, "num_layers": 1,
                               "num_features": 4, "num_basis": 4, "dtype": "float64"}))


def test_fine_tuning_checks_name_element_and_cutoff(tmp_path):
    path = tmp_path / "pre.pt"
    model = small_model()
    save_model(path, model, {"e0": {"C": 0.0}})
    with pytest.raises(ValueError, match=r"data has element\(s\) \['Si'\] but the model knows "
                                         r"\['C'\]"):
        check_compatible(model, str(path), ["C", "Si"], 4.0)
    with pytest.raises(ValueError, match=r"cutoff r_max=4.0 Å differs from the config's "
                                         r"model.r_max=5.0 Å"):
        check_compatible(model, str(path), ["C"], 5.0)
    check_compatible(model, str(path), ["C"], 4.0)


def test_fit_shift_removes_a_constant_per_atom_offset():
    records = carbon_records(5, 11)
    model = small_model()
    base = [e for e, _ in predict(model, records)]
    for record, e in zip(records, base):  # data = model + 2.5 eV/atom
        record["energy"] = e + 2.5 * len(record["numbers"])
    forces_before = [f for _, f in predict(model, records)]
    change = fit_shift(model, records)
    assert change["C"] == pytest.approx(2.5, abs=1e-9)
    after = predict(model, records)
    for record, (e, f), f0 in zip(records, after, forces_before):
        assert e == pytest.approx(record["energy"], abs=1e-8)
        np.testing.assert_allclose(f, f0, atol=1e-12)  # a shift moves no force
