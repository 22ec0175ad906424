"""Foundation teachers (SevenNet-0, CHGNet 0.3.0) and multi-element data: the teacher through
``fix external`` equals the library's own calculator, MD conserves energy, coverage is refused
before any job, batched labels equal single ones, and two-species cells, labels, shards and
E0 fits come out right."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import QUICK_PROTOCOL
from defaults import model_config, protocol

from synthpre.cells import cell_composition, random_cell
from synthpre.config_check import ConfigError, check_config
from synthpre.foundation import (
    CHGNET_0_3_ELEMENTS,
    SEVENNET_0_ELEMENTS,
    chgnet,
    label_batch,
    sevennet,
)
from synthpre.frames import read_frames, write_frames
from synthpre.label import label_frames
from synthpre.lammps_system import LammpsSystem, isolated_atom_energy
from synthpre.md import run_trajectory
from synthpre.real_data import fit_e0, ingest
from synthpre.shard import build_shards
from synthpre.teachers import get_teacher

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lisi():
    """A 16-atom Li8Si8 cell at 1.5 g/cm^3, relaxed a little off the random start."""
    return random_cell({"Li": 8, "Si": 8}, 1.5, 1.6, seed=3)


@pytest.fixture(scope="module", params=["sevennet-0", "chgnet-0.3"])
def teacher(request):
    return get_teacher(request.param)


def test_coverage_lists_match_the_shipped_models():
    from ase.data import chemical_symbols

    calc = sevennet()
    assert sorted(chemical_symbols[z] for z in calc.type_map) == sorted(SEVENNET_0_ELEMENTS)
    net = chgnet().model
    # one embedding row and one reference energy per atomic number 1..94
    assert net.atom_embedding.embedding.num_embeddings == len(CHGNET_0_3_ELEMENTS) == 94
    assert net.composition_model.fc.in_features == 94


def test_fix_external_equals_the_library_calculator(teacher, lisi):
    """LAMMPS's energy and forces with the teacher in ``fix external`` are the calculator's."""
    direct = lisi.copy()
    direct.calc = teacher.make_calculator()
    e_ref, f_ref = direct.get_potential_energy(), direct.get_forces()
    system = LammpsSystem(lisi, teacher)
    try:
        energy, forces = system.single_point()
    finally:
        system.close()
    assert np.abs(f_ref).max() > 0.1  # a real, non-trivial structure
    assert energy == pytest.approx(e_ref, abs=1e-5)
    np.testing.assert_allclose(forces, f_ref, rtol=0, atol=1e-5)


def test_md_steps_conserve_energy_through_fix_external(lisi):
    """NVE with the default teacher: forces are consistent with the energy LAMMPS reports."""
    system = LammpsSystem(lisi, get_teacher("chgnet-0.3"))
    lmp = system.lmp
    lmp.commands_list(["thermo_style custom step temp pe etotal", "timestep 0.0005",
                       "velocity all create 600 5 mom yes rot no", "fix nve all nve", "run 0"])
    e_start = lmp.get_thermo("etotal")
    energies = []
    for _ in range(5):
        lmp.command("run 4 pre no post no")
        energies.append(lmp.get_thermo("etotal"))
    kinetic = lmp.get_thermo("etotal") - lmp.get_thermo("pe")
    system.close()
    assert system.callback_error is None and kinetic > 0.1
    drift = np.abs(np.array(energies) - e_start).max()
    assert drift < 0.02 * kinetic, (drift, kinetic)


def test_md_trajectory_with_two_species_runs():
    proto = protocol(**{"dump_every_ps": 0.005, "stages": [
        {"name": "anneal", "T_start": 1000, "T_end": 1000, "duration_ps": 0.01}]})
    result = run_trajectory(get_teacher("chgnet-0.3"), {"Li": 6, "Si": 6}, 1.5, 1000,
                            proto, seed=1, traj_id="lisi", min_distance=1.6)
    assert result.failure is None and len(result.frames) == 2
    assert sorted(result.frames[-1].get_chemical_symbols()) == ["Li"] * 6 + ["Si"] * 6


def load_config(**synthetic) -> dict:
    """config.yaml with these synthetic fields, completed by the schema as Snakemake does."""
    from synthpre.config import complete

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["synthetic"].update(synthetic)
    return complete(config)


@pytest.mark.parametrize("name", ["sevennet-0", "chgnet-0.3"])
def test_element_outside_coverage_is_refused_before_any_job(name):
    config = load_config(teacher=name, labellers=[name], composition={"Li": 1, "Po": 1})
    config["elements"] = ["Li", "Po"] if name == "sevennet-0" else ["Li", "Am"]
    config["synthetic"]["composition"] = {e: 1 for e in config["elements"]}
    with pytest.raises(ConfigError) as err:
        check_config(config, read_data=False)
    missing = config["elements"][1]
    assert f"teacher '{name}' does not cover element(s) ['{missing}']" in str(err.value)
    assert "synthetic.teacher" in str(err.value)


def test_binary_config_needs_a_composition_and_accepts_one():
    config = load_config(teacher="tersoff", labellers=["tersoff"])
    config["elements"] = ["C", "Si"]
    with pytest.raises(ConfigError, match="'synthetic.composition' is needed"):
        check_config(config, read_data=False)
    config["synthetic"]["composition"] = {"C": 1, "Si": 1}
    assert check_config(config, read_data=False) == []
    config["synthetic"]["composition"] = {"C": 1, "O": 1}
    with pytest.raises(ConfigError, match=r"element\(s\) \['O'\] are not in config field"):
        check_config(config, read_data=False)


@pytest.mark.parametrize("composition, n, expected", [
    ({"Li": 1, "Si": 1}, 16, {"Li": 8, "Si": 8}),
    ({"Li": 15, "Si": 4}, 64, {"Li": 51, "Si": 13}),   # 50.5 / 13.5: ties go to the first
    ({"Si": 0.2, "Li": 0.8}, 10, {"Li": 8, "Si": 2}),
    ({"O": 2, "Si": 1, "Li": 1}, 7, {"Li": 2, "O": 3, "Si": 2}),
])
def test_cell_composition_sums_to_n_atoms(composition, n, expected):
    assert cell_composition(sorted(composition), n, composition) == expected
    atoms = random_cell(expected, 1.5, 1.0, seed=0)
    assert {s: atoms.get_chemical_symbols().count(s) for s in expected} == expected


def test_batched_labels_equal_one_by_one(teacher):
    frames = [random_cell({"Li": 4 + 2 * k, "Si": 8 - 2 * k}, 1.6, 1.6, seed=k) for k in range(3)]
    calc = teacher.make_calculator()
    energies, forces, _ = label_batch(calc, frames, batch_size=2)
    for atoms, e, f in zip(frames, energies, forces):
        probe = atoms.copy()
        probe.calc = calc
        assert e == pytest.approx(probe.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(f, probe.get_forces(), rtol=0, atol=1e-4)


def test_labels_carry_e0_of_each_species(teacher, lisi):
    """E - sum E0 with the teacher's own isolated atoms, one E0 per element."""
    labelled = label_frames([lisi], teacher)[0]
    calc = teacher.make_calculator()
    e0 = {s: isolated_atom_energy(s, teacher, calculator=calc) for s in ("Li", "Si")}
    direct = lisi.copy()
    direct.calc = calc
    assert labelled.info["e0_Li"] == pytest.approx(e0["Li"], abs=1e-6)
    assert labelled.info["e0_Si"] == pytest.approx(e0["Si"], abs=1e-6)
    assert e0["Li"] != pytest.approx(e0["Si"], abs=0.1)
    assert labelled.info["energy"] == pytest.approx(
        direct.get_potential_energy() - 8 * e0["Li"] - 8 * e0["Si"], abs=1e-4)
    # bound alloy: the cohesive energy is negative and of a physical size (eV/atom)
    assert -5.0 < labelled.info["energy"] / 16 < -1.0


@pytest.fixture(scope="module")
def sic_frames():
    """Tersoff (SiC.tersoff, a real binary potential) frames of three compositions."""
    frames = []
    for k, (n_c, n_si) in enumerate([(4, 12), (8, 8), (12, 4)]):
        result = run_trajectory(get_teacher("tersoff"), {"C": n_c, "Si": n_si}, 2.6, 3000,
                                protocol(**QUICK_PROTOCOL), seed=k, traj_id=f"t{k}", min_distance=1.0)
        assert result.failure is None
        frames += result.frames[-4:]
    return frames


def test_binary_labels_shards_and_real_data(sic_frames, tmp_path):
    tersoff = get_teacher("tersoff")
    labelled = label_frames(sic_frames, tersoff)
    e0 = {s: isolated_atom_energy(s, tersoff) for s in ("C", "Si")}
    assert all(a.info[f"e0_{s}"] == pytest.approx(e0[s]) for a in labelled for s in e0)
    for k in range(3):
        write_frames(tmp_path / f"t{k}.extxyz", labelled[4 * k:4 * k + 4])
    manifest = build_shards([str(tmp_path / f"t{k}.extxyz") for k in range(3)], [],
                            str(tmp_path / "shards"), min_time_ps=0.0, max_force=1e9,
                            val_fraction=0.34, seed=0, frames_per_shard=5, r_max=4.0)
    assert manifest["elements"] == ["C", "Si"]
    assert manifest["e0"] == pytest.approx(e0)
    write_frames(tmp_path / "real.extxyz", labelled)
    summary = ingest(str(tmp_path / "real.extxyz"), str(tmp_path / "real"), ["C", "Si"])
    assert summary["e0"] == pytest.approx(e0)


def test_fit_e0_recovers_per_species_references(sic_frames):
    """Total energies = sum_s n_s E0_s + a small composition-free part: the fit finds E0_s."""
    true = {"C": -3.25, "Si": -5.5}
    rng = np.random.default_rng(0)
    energies = np.array([sum(true[s] for s in a.get_chemical_symbols())
                         + 0.01 * len(a) * rng.standard_normal() for a in sic_frames])
    fitted = fit_e0(sic_frames, energies, ["C", "Si"])
    assert fitted["C"] == pytest.approx(true["C"], abs=0.01)
    assert fitted["Si"] == pytest.approx(true["Si"], abs=0.01)


def test_fit_e0_refuses_a_single_composition(sic_frames):
    same = [a for a in sic_frames if a.get_chemical_symbols().count("C") == 8]
    with pytest.raises(ValueError, match="cannot separate"):
        fit_e0(same, np.zeros(len(same)), ["C", "Si"])


@pytest.mark.parametrize("compositions", [[(4, 12)], [(4, 12), (12, 4)]])
def test_fit_shift_per_species(compositions):
    """Fine-tuning's shift re-fit: two compositions separate the species' shifts exactly;
    one composition moves both species by the same per-atom amount."""
    from synthpre.frames import to_record
    from synthpre.model import NequIP
    from synthpre.train import fit_shift, predict

    torch.manual_seed(0)
    model = NequIP.from_config(model_config(**{"species": ["Li", "Si"], "r_max": 4.0, "num_layers": 1,
                                "num_features": 4, "l_max": 1, "dtype": "float64"}))
    true = {"Li": -1.5, "Si": -4.0}
    records = []
    for k, (n_li, n_si) in enumerate(compositions * 2):
        atoms = random_cell({"Li": n_li, "Si": n_si}, 1.5, 1.6, seed=k)
        atoms.info["energy"], atoms.arrays["forces"] = 0.0, np.zeros((16, 3))
        records.append(to_record(atoms, "mem", k, "energy", "forces"))
    before = [e for e, _ in predict(model, records)]
    for r, e in zip(records, before):
        r["energy"] = e + true["Li"] * np.sum(r["numbers"] == 3) + true["Si"] * np.sum(
            r["numbers"] == 14)
    delta = fit_shift(model, records)
    if len(compositions) == 2:
        assert delta == pytest.approx(true, abs=1e-8)
        after = [e for e, _ in predict(model, records)]
        assert after == pytest.approx([r["energy"] for r in records], abs=1e-6)
    else:
        per_atom = (4 * true["Li"] + 12 * true["Si"]) / 16
        assert delta == pytest.approx({"Li": per_atom, "Si": per_atom}, abs=1e-8)


def test_lisi_example_data_is_physical():
    """The shipped example set: PBE labels, two species, E0 per element, sane ranges."""
    path = REPO / "data" / "lisi" / "lisi-dft.extxyz"
    frames = read_frames(path)
    assert len(frames) == 27
    formulas = {a.get_chemical_formula() for a in frames}
    assert {"Li4Si12", "Li8Si8", "Li12Si4"} <= formulas
    for atoms in frames:
        assert atoms.info["labeller"] == "gpaw"
        assert {"e0_Li", "e0_Si"} <= set(atoms.info)
        assert -6.0 < atoms.info["energy"] / len(atoms) < -1.0
        assert np.abs(atoms.arrays["forces"]).max() < 20.0
        assert np.abs(atoms.arrays["forces"].sum(axis=0)).max() < 0.05  # momentum


def test_lisi_config_dag_builds_here(tmp_path):
    """configs/lisi.yaml: a binary study with foundation teachers and its DFT stage plans
    the jobs its README section describes (a dry run, nothing computed)."""
    (tmp_path / "data").symlink_to(REPO / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "-n", "--quiet", "rules", "--configfile",
         str(REPO / "configs" / "lisi.yaml")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(line.split() for line in proc.stdout.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["md"] == "4" and counts["label"] == "8" and counts["dft"] == "2"
    assert counts["pretrain"] == "2" and counts["finetune"] == "12" and counts["scratch"] == "6"


def test_md_command_builds_the_composition_from_the_config(tmp_path):
    """`synthpre md` with the md rule's settings slice: a binary cell of the configured
    composition (Tersoff SiC, seconds), and a single-element config keeps its old slice."""
    import json

    from synthpre import job_settings
    from synthpre.cli import main
    from synthpre.config import complete

    config = load_config(teacher="tersoff", labellers=["tersoff"], n_atoms=12,
                         composition={"C": 1, "Si": 2})
    config["elements"] = ["C", "Si"]
    config["synthetic"]["protocol"] = {"dump_every_ps": 0.01, "stages": [
        {"name": "anneal", "T_start": 2000, "T_end": 2000, "duration_ps": 0.02}]}
    settings = job_settings.md(complete(config), "tersoff")  # as Snakemake validates it
    assert settings["composition"] == {"C": 1, "Si": 2}
    frames = tmp_path / "frames.extxyz"
    assert main(["md", "--settings", json.dumps(settings), "--teacher", "tersoff",
                 "--job", "d2.5-T2000-r0", "--out-frames", str(frames),
                 "--out-status", str(tmp_path / "md.json")]) == 0
    last = read_frames(frames)[-1]
    assert sorted(last.get_chemical_symbols()) == ["C"] * 4 + ["Si"] * 8
    assert "composition" not in job_settings.md(load_config(), "snap_c")


def test_model_tells_species_apart_and_ignores_atom_order(lisi):
    """Two species in the student model: permuting atoms (with their species) changes
    nothing, swapping which atoms are Li and which Si changes the energy and forces.
    (Rotation and forces = -dE/dr with two species: tests/test_model.py, C and O.)"""
    from synthpre.frames import to_record
    from synthpre.graph import collate
    from synthpre.model import NequIP

    torch.manual_seed(0)
    model = NequIP.from_config(model_config(**{"species": ["Li", "Si"], "r_max": 4.0, "num_layers": 2,
                                "num_features": 8, "l_max": 1, "dtype": "float64"})).eval()

    def run(atoms):
        atoms = atoms.copy()
        atoms.info["energy"], atoms.arrays["forces"] = 0.0, np.zeros((len(atoms), 3))
        out = model(collate([to_record(atoms, "mem", 0)], model.species, 4.0, torch.float64))
        return out["energy"].item(), out["forces"].detach().numpy()

    e, f = run(lisi)
    perm = np.random.default_rng(1).permutation(len(lisi))
    e_perm, f_perm = run(lisi[perm])
    assert e_perm == pytest.approx(e, abs=1e-10)
    np.testing.assert_allclose(f_perm, f[perm], atol=1e-10)
    swapped = lisi.copy()
    swapped.set_chemical_symbols(["Si" if s == "Li" else "Li" for s in lisi.get_chemical_symbols()])
    e_swap, f_swap = run(swapped)
    assert abs(e_swap - e) > 1e-4 and np.abs(f_swap - f).max() > 1e-4
