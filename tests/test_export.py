"""``synthpre export``: the metatomic file, loaded where synthpre cannot be imported, gives
the same total energies, forces and stress as ``SynthpreCalculator``."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read, write
from defaults import model_config
from random_atoms import random_cell

from synthpre.calculator import SynthpreCalculator
from synthpre.cli import main
from synthpre.graph import collate
from synthpre.model import NequIP
from synthpre.modelfile import save_model

torch.set_num_threads(1)

E0 = {"C": -1.2345, "O": -4.321}

# Runs in `python -I` with every sys.path entry that holds synthpre removed (the editable
# install's .pth puts its src/ there): the exported file must stand on metatomic alone.
NO_SYNTHPRE = r"""
import json, os, sys
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p, "synthpre"))]
try:
    import synthpre
    raise SystemExit("synthpre is importable: the test would prove nothing")
except ImportError:
    pass
import numpy as np, torch
from ase.io import read
from metatomic_ase import MetatomicCalculator
torch.set_num_threads(1)
model, structures, out = sys.argv[1:]
from metatensor.torch import Labels
from metatomic.torch import ModelOutput
calc = MetatomicCalculator(model, check_consistency=True)
cells, results = read(structures, ":"), []
for atoms in cells:
    atoms.calc = calc
    r = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist(),
         "energies": atoms.get_potential_energies().tolist()}
    if atoms.pbc.all():
        r["stress"] = atoms.get_stress().tolist()
    results.append(r)
# all cells in one model call; then only atoms 0 and 2 of the first (domain decomposition)
energy = {"energy": ModelOutput(unit="eV", sample_kind="system")}
batched = calc.run_model(cells, energy)["energy"].block().values
selected = Labels(["system", "atom"], torch.tensor([[0, 0], [0, 2]], dtype=torch.int32))
partial = calc.run_model(cells[0], energy, selected)["energy"].block().values
json.dump({"cells": results, "batched": batched.flatten().tolist(),
           "selected": float(partial.sum())}, open(out, "w"))
"""


def as_record(atoms: Atoms) -> dict:
    return {"numbers": atoms.numbers, "positions": atoms.positions, "cell": atoms.cell.array,
            "pbc": atoms.pbc}


def carbon_cells() -> list[Atoms]:
    diamond = bulk("C", "diamond", 3.57, cubic=True)
    diamond.rattle(0.05, seed=1)
    small = bulk("C", "diamond", 3.57)  # 2 atoms: the cutoff spans many periodic images
    small.rattle(0.05, seed=2)
    return [diamond, small, random_cell(3, ["C"], 32, 6.5),
            random_cell(4, ["C"], 12, 5.0, periodic=False)]


def make_model(path, species: list[str], dtype: str, seed: int = 0):
    """A small model whose energies and forces are eV-sized (scale and shift moved)."""
    torch.manual_seed(seed)
    model = NequIP.from_config(model_config(**{"species": species, "r_max": 3.5, "num_layers": 2,
                                "num_features": 8, "l_max": 1, "dtype": dtype}))
    with torch.no_grad():
        model.scale.fill_(5.0)
        model.shift.uniform_(-1.0, 1.0)
        model.bessel.weights.add_(0.1 * torch.randn_like(model.bessel.weights))
    save_model(path, model, {"e0": {s: E0[s] for s in species}})
    return path


def export_and_compare(tmp_path, model_path, cells):
    out = tmp_path / "exported.pt"
    assert main(["export", str(model_path), str(out)]) == 0
    structures = tmp_path / "cells.extxyz"
    write(structures, cells)
    cells = read(structures, ":")  # both sides see the same (extxyz-rounded) positions
    proc = subprocess.run([sys.executable, "-I", "-c", NO_SYNTHPRE, str(out), str(structures),
                           str(tmp_path / "results.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    got = result["cells"]
    calc = SynthpreCalculator(model_path)
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for atoms, r, batched in zip(cells, got, result["batched"]):
        atoms = atoms.copy()
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        worst["energy"] = max(worst["energy"], abs(energy - r["energy"]) / len(atoms),
                              abs(energy - batched) / len(atoms))
        atomic = calc.model(collate([as_record(atoms)], calc.model.species, calc.model.r_max,
                                    calc.model.dtype))["atomic_energy"].detach().numpy()
        atomic = atomic + [calc.e0[s] for s in atoms.get_chemical_symbols()]
        worst["energy"] = max(worst["energy"], np.abs(atomic - r["energies"]).max())
        forces = atoms.get_forces()
        assert np.abs(forces).max() > 0.05  # eV/Å-sized: the comparison means something
        worst["forces"] = max(worst["forces"], np.abs(forces - r["forces"]).max())
        if "stress" in r:
            worst["stress"] = max(worst["stress"], np.abs(atoms.get_stress() - r["stress"]).max())
    assert len(got) == len(cells) and all("stress" in r for r, a in zip(got, cells) if a.pbc.all())
    selected = got[0]["energies"][0] + got[0]["energies"][2]
    worst["energy"] = max(worst["energy"], abs(result["selected"] - selected))
    print(f"export vs SynthpreCalculator, worst: {worst}")
    return worst


def test_carbon_float32(tmp_path):
    model = make_model(tmp_path / "model.pt", ["C"], "float32")
    worst = export_and_compare(tmp_path, model, carbon_cells())
    assert worst["energy"] < 1e-5 and worst["forces"] < 1e-4 and worst["stress"] < 1e-5


def test_carbon_float64(tmp_path):
    model = make_model(tmp_path / "model.pt", ["C"], "float64")
    worst = export_and_compare(tmp_path, model, carbon_cells())
    assert worst["energy"] < 1e-12 and worst["forces"] < 1e-10 and worst["stress"] < 1e-12


def test_two_species_float32(tmp_path):
    model = make_model(tmp_path / "model.pt", ["C", "O"], "float32", seed=1)
    cells = [random_cell(5, ["C", "O", "C"], 24, 6.0), random_cell(6, ["O", "C"], 8, 4.0)]
    worst = export_and_compare(tmp_path, model, cells)
    assert worst["energy"] < 1e-5 and worst["forces"] < 1e-4 and worst["stress"] < 1e-5


def test_exported_metadata(tmp_path):
    from metatomic.torch import load_atomistic_model

    out = tmp_path / "exported.pt"
    assert main(["export", str(make_model(tmp_path / "m.pt", ["O", "C"], "float32")),
                 str(out)]) == 0
    caps = load_atomistic_model(str(out)).capabilities()
    assert sorted(caps.atomic_types) == [6, 8] and caps.dtype == "float32"
    assert caps.length_unit == "angstrom" and caps.outputs["energy"].unit == "eV"
    assert caps.interaction_range == pytest.approx(2 * 3.5)  # layers x r_max (ghost atoms)


@pytest.mark.parametrize("case", ["not a model", "truncated", "no e0", "missing folder"])
def test_bad_input_names_the_file(tmp_path, capsys, case):
    good = make_model(tmp_path / "model.pt", ["C"], "float32")
    model, out = tmp_path / "bad.pt", tmp_path / "out.pt"
    if case == "not a model":
        model.write_text("energy: -1.0\n")
    elif case == "truncated":
        model.write_bytes(good.read_bytes()[:2000])
    elif case == "no e0":
        payload = torch.load(good, weights_only=True)
        payload["e0"] = {}
        torch.save(payload, model)
    else:
        model, out = good, tmp_path / "nowhere" / "out.pt"
    assert main(["export", str(model), str(out)]) == 2
    err = capsys.readouterr().err
    assert (str(out.parent) if case == "missing folder" else str(model)) in err
    assert not out.exists()
    if case == "no e0":
        assert "isolated-atom energy" in err


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_ipi_metatomic_driver(tmp_path, dtype, tol):
    """i-PI's metatomic driver (what `i-pi-driver-py -m metatomic` runs; called directly, no
    socket server) gives SynthpreCalculator's energy, forces and virial, in i-PI's units."""
    from ipi.pes.metatomic import MetatomicDriver
    from ipi.utils.units import unit_to_internal, unit_to_user

    model = make_model(tmp_path / "model.pt", ["C", "O"], dtype, seed=2)
    assert main(["export", str(model), str(tmp_path / "exported.pt")]) == 0
    atoms = random_cell(7, ["C", "O"], 16, 5.0)
    write(tmp_path / "template.xyz", atoms)
    atoms = read(tmp_path / "template.xyz")
    driver = MetatomicDriver(template=str(tmp_path / "template.xyz"),
                             model=str(tmp_path / "exported.pt"))
    bohr = lambda x: unit_to_internal("length", "angstrom", x)  # noqa: E731
    pot, force, virial, _ = driver.compute_structure(bohr(atoms.cell.array.T),
                                                     bohr(atoms.positions))
    atoms.calc = SynthpreCalculator(model)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.05
    energy = float(np.ravel(unit_to_user("energy", "electronvolt", pot))[0])
    assert abs(energy - atoms.get_potential_energy()) / len(atoms) < tol
    np.testing.assert_allclose(unit_to_user("force", "ev/ang", np.asarray(force)).reshape(-1, 3),
                               forces, atol=10 * tol, rtol=0)
    virial = unit_to_user("energy", "electronvolt", np.asarray(virial)).reshape(3, 3)
    np.testing.assert_allclose(virial, -atoms.get_stress(voigt=False) * atoms.get_volume(),
                               atol=10 * tol, rtol=0)
