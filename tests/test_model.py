"""Symmetries, derivatives and file round trips of the NequIP model (float64 throughout)."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from defaults import model_config
from scipy.spatial.transform import Rotation

from synthpre.calculator import SynthpreCalculator
from synthpre.graph import collate
from synthpre.model import NequIP, count_parameters
from synthpre.modelfile import load_model, save_model

TINY = {"species": ["C", "O"], "r_max": 3.5, "num_layers": 2, "num_features": 8, "l_max": 1,
        "avg_num_neighbors": 12.0, "dtype": "float64"}

torch.set_num_threads(1)  # tiny graphs: extra OpenMP threads only contend


def random_structure(seed: int, periodic: bool) -> dict:
    """8-16 atoms of C and O, no pair closer than 1 Å; triclinic cell when periodic."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 17))
    cell = np.diag([5.0, 5.5, 6.0]) + rng.uniform(-0.8, 0.8, (3, 3))
    pos = []
    while len(pos) < n:
        p = rng.random(3) @ cell
        if all(np.linalg.norm(p - q) > 1.0 for q in pos):
            pos.append(p)
    atoms = Atoms(numbers=rng.choice([6, 8], n), positions=pos, cell=cell, pbc=periodic)
    if periodic:  # reject images closer than 1 Å too
        atoms.wrap()
        d = atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)]
        if d.min() < 1.0:
            return random_structure(seed + 1000, periodic)
    return as_record(atoms)


def as_record(atoms: Atoms) -> dict:
    return {"numbers": atoms.numbers.copy(), "positions": atoms.positions.copy(),
            "cell": atoms.cell.array.copy(), "pbc": atoms.pbc.copy()}


def run(model, record, stress=False):
    out = model(collate([record], model.species, model.r_max, model.dtype), compute_stress=stress)
    return {k: v.detach().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = NequIP.from_config(model_config(**TINY)).eval()
    with torch.no_grad():  # make the Bessel frequencies differ from their start too
        m.bessel.weights.add_(0.1 * torch.randn_like(m.bessel.weights))
    return m


def assert_close(a, b, rtol=1e-9):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("seed", [1, 2])
def test_rotation(model, periodic, seed):
    rec = random_structure(seed, periodic)
    ref = run(model, rec)
    assert abs(ref["energy"][0]) > 1e-3 and np.abs(ref["forces"]).max() > 1e-3
    R = Rotation.random(random_state=seed).as_matrix()
    rot = {**rec, "positions": rec["positions"] @ R.T, "cell": rec["cell"] @ R.T}
    out = run(model, rot)
    assert_close(out["energy"], ref["energy"])
    assert_close(out["forces"], ref["forces"] @ R.T)


def test_rotation_lmax2():
    torch.manual_seed(1)
    m = NequIP.from_config(model_config(**{**TINY, "l_max": 2})).eval()
    rec = random_structure(3, True)
    R = Rotation.random(random_state=3).as_matrix()
    ref = run(m, rec)
    out = run(m, {**rec, "positions": rec["positions"] @ R.T, "cell": rec["cell"] @ R.T})
    assert_close(out["energy"], ref["energy"])
    assert_close(out["forces"], ref["forces"] @ R.T)


@pytest.mark.parametrize("periodic", [True, False])
def test_translation_and_wrapping(model, periodic):
    rec = random_structure(4, periodic)
    ref = run(model, rec)
    atoms = Atoms(numbers=rec["numbers"], positions=rec["positions"] + [3.1, -7.3, 11.2],
                  cell=rec["cell"], pbc=periodic)
    if periodic:
        atoms.wrap()  # other cell shifts for the same edges
    out = run(model, as_record(atoms))
    assert_close(out["energy"], ref["energy"])
    assert_close(out["forces"], ref["forces"])


def test_permutation(model):
    rec = random_structure(5, True)
    perm = np.random.default_rng(5).permutation(len(rec["numbers"]))
    ref = run(model, rec)
    out = run(model, {**rec, "numbers": rec["numbers"][perm], "positions": rec["positions"][perm]})
    assert_close(out["energy"], ref["energy"])
    assert_close(out["forces"], ref["forces"][perm])
    assert_close(out["atomic_energy"], ref["atomic_energy"][perm])


@pytest.mark.parametrize("periodic", [True, False])
def test_inversion(model, periodic):
    rec = random_structure(6, periodic)
    ref = run(model, rec)
    out = run(model, {**rec, "positions": -rec["positions"], "cell": -rec["cell"]})
    assert_close(out["energy"], ref["energy"])
    assert_close(out["forces"], -ref["forces"])


@pytest.mark.parametrize("periodic", [True, False])
def test_forces_are_minus_gradient(model, periodic):
    rec = random_structure(7, periodic)
    forces = run(model, rec)["forces"]
    h = 1e-5
    for atom, axis in [(0, 0), (1, 1), (2, 2), (3, 0)]:
        plus, minus = ({**rec, "positions": rec["positions"].copy()} for _ in range(2))
        plus["positions"][atom, axis] += h
        minus["positions"][atom, axis] -= h
        numerical = -(run(model, plus)["energy"][0] - run(model, minus)["energy"][0]) / (2 * h)
        assert abs(numerical - forces[atom, axis]) < 1e-7 * max(1, abs(numerical))


def test_stress_is_strain_derivative(model):
    rec = random_structure(8, True)
    stress = run(model, rec, stress=True)["stress"][0]
    assert np.abs(stress).max() > 1e-4
    volume = abs(np.linalg.det(rec["cell"]))
    h = 1e-5
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += sign * h / 2
            eps[b, a] += sign * h / 2
            deformed = {**rec, "positions": rec["positions"] @ (np.eye(3) + eps),
                        "cell": rec["cell"] @ (np.eye(3) + eps)}
            energies.append(run(model, deformed)["energy"][0])
        numerical = (energies[0] - energies[1]) / (2 * h) / volume
        assert abs(numerical - stress[a, b]) < 1e-7 * max(1, abs(numerical))
    assert_close(stress, stress.T)


def test_stress_nan_without_periodicity(model):
    assert np.isnan(run(model, random_structure(8, False), stress=True)["stress"]).all()


def test_extensive(model):
    rec = random_structure(9, True)
    atoms = Atoms(numbers=rec["numbers"], positions=rec["positions"], cell=rec["cell"], pbc=True)
    big = run(model, as_record(atoms.repeat((2, 2, 2))))
    small = run(model, rec)
    assert_close(big["energy"][0], 8 * small["energy"][0])
    assert_close(big["forces"][: len(atoms)], small["forces"])


def test_batch_equals_single(model):
    recs = [random_structure(s, s % 2 == 0) for s in range(10, 13)]
    out = model(collate(recs, model.species, model.r_max, model.dtype))
    for k, rec in enumerate(recs):
        assert_close(out["energy"][k].item(), run(model, rec)["energy"][0])


def test_save_load_round_trip(model, tmp_path):
    save_model(tmp_path / "model.pt", model, {"e0": {"C": -1.25, "O": -2.5}, "data": "x"})
    loaded, meta = load_model(tmp_path / "model.pt")
    assert meta["e0"] == {"C": -1.25, "O": -2.5} and meta["data"] == "x"
    assert loaded.config == model.config
    rec = random_structure(13, True)
    a, b = run(model, rec), run(loaded, rec)
    assert np.array_equal(a["energy"], b["energy"]) and np.array_equal(a["forces"], b["forces"])


def test_calculator_total_energy_and_stress(model, tmp_path):
    e0 = {"C": -1.25, "O": -2.5}
    save_model(tmp_path / "model.pt", model, {"e0": e0})
    rec = random_structure(14, True)
    atoms = Atoms(numbers=rec["numbers"], positions=rec["positions"], cell=rec["cell"], pbc=True)
    atoms.calc = SynthpreCalculator(tmp_path / "model.pt")
    ref = run(model, rec, stress=True)
    shift = sum(e0[s] for s in atoms.get_chemical_symbols())
    assert shift != 0
    assert_close(atoms.get_potential_energy(), ref["energy"][0] + shift)
    assert_close(atoms.get_forces(), ref["forces"])
    numerical = calculate_numerical_stress(atoms, eps=1e-5)  # ASE's own sign convention
    np.testing.assert_allclose(atoms.get_stress(), numerical, atol=1e-7)


def test_unknown_element_is_named(model):
    rec = random_structure(15, True)
    rec["numbers"][3] = 14
    with pytest.raises(ValueError, match="Si"):
        collate([rec], model.species, model.r_max, model.dtype)


def test_paper_size():
    m = NequIP.from_config(model_config(**{"species": ["C"]}))
    assert 70_000 < count_parameters(m) < 78_000
