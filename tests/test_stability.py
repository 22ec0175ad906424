"""Stability stage: failure detection, structure analysis, teacher vs broken model on the same
protocol, the job's outputs, and bad input stopping before any MD."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from ase.lattice.hexagonal import Graphite
from defaults import model_config, protocol

from synthpre.frames import read_frames, write_frames
from synthpre.md import run_trajectory
from synthpre.model import NequIP
from synthpre.modelfile import save_model
from synthpre.stability.analysis import pooled_relabel, relabel
from synthpre.stability.curves import parse_point, stability_curves
from synthpre.stability.job import run_stability_job
from synthpre.stability.run import detect, run_md
from synthpre.stability.settings import FailureCriteria, StabilitySettings
from synthpre.stability.starts import select_starts
from synthpre.stability.structure import coordination_fractions, rdf, rdf_distance
from synthpre.teachers import get_teacher

STABILITY = {
    "starts": {"source": "test", "count": 2, "density_min": 1.8, "density_max": 2.4},
    "velocity_seeds": [1],
    "protocol": {"T_initial": 300, "T_anneal": 3000, "warmup_ps": 0.2, "hold_ps": 0.3,
                 "nve_ps": 0.1, "timestep_fs": 1.0, "tdamp_fs": 100.0, "dump_every_ps": 0.05},
    "failure": {"check_every_fs": 10, "min_distance": 0.7, "max_force": 30.0,
                "max_temperature_factor": 2.0, "close_pair_factor": 0.45,
                "unphysical_factor": 2.0},
    "analysis": {"relabel_frames": 4, "coordination_cutoff": 1.85, "rdf_r_max": 4.0,
                 "rdf_bins": 40, "coordination_factor": 1.25},
}
CFG = StabilitySettings.from_config(STABILITY)
TINY_MODEL = {"r_max": 4.0, "num_layers": 1, "num_features": 4, "l_max": 1, "num_basis": 4,
              "species": ["C"]}


def job_settings(teacher="lcbop", **stability):
    s = copy.deepcopy(STABILITY)
    for key, value in stability.items():
        s[key] = {**s[key], **value} if isinstance(value, dict) else value
    return {"stability": s, "elements": ["C"], "teacher": teacher, "teachers": {}}


@pytest.fixture(scope="module")
def starts_file(tmp_path_factory):
    """Two 32-atom amorphous cells quenched with LCBOP (about a second)."""
    proto = protocol(**{"dump_every_ps": 0.1, "stages": [
        {"name": "melt", "T_start": 5000, "T_end": 5000, "duration_ps": 0.3},
        {"name": "quench", "T_start": 5000, "T_end": 1000, "duration_ps": 0.5}]})
    cells = [run_trajectory(get_teacher("lcbop"), {"C": 32}, d, 3000, proto, seed=k,
                            traj_id="q", min_distance=1.0).frames[-1] for k, d in enumerate((2.0, 2.2))]
    path = tmp_path_factory.mktemp("starts") / "starts.extxyz"
    write_frames(path, cells)
    return path


def save_tiny_model(path, scale=1.0):
    """A tiny random NequIP; ``scale`` multiplies its energies and forces (a broken model)."""
    import torch

    torch.manual_seed(0)
    model = NequIP.from_config(model_config(**TINY_MODEL))
    model.scale.fill_(scale)
    save_model(path, model, {"e0": {"C": 0.0}})
    return path


def test_detector_fires_on_a_pair_at_half_an_angstrom():
    atoms = Atoms("C2", positions=[[1, 1, 1], [1.5, 1, 1]], cell=[6, 6, 6], pbc=True)
    crit = CFG.failure
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, crit) == \
        ("close_pair", "pair at 0.500 Å < 0.7 Å")
    no_pair_check = FailureCriteria(10, 0.0, 30.0, 2.0, 0.45, 2.0)  # min_distance 0: off
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, no_pair_check) is None
    atoms.positions[1] = [2.5, 1, 1]
    assert detect(atoms, np.zeros((2, 3)), -1.0, 300.0, 3000.0, crit) is None
    assert detect(atoms, np.full((2, 3), 31.0), -1.0, 300.0, 3000.0, crit)[0] == "large_force"
    assert detect(atoms, np.zeros((2, 3)), -1.0, 6001.0, 3000.0, crit)[0] == "hot"
    assert detect(atoms, np.zeros((2, 3)), float("nan"), 300.0, 3000.0, crit)[0] == "non_finite"
    assert detect(None, None, -1.0, 300.0, 3000.0, crit, lost=1) == ("lost_atoms", "1 atoms lost")


def test_md_from_a_cell_with_a_close_pair_fails_at_once():
    atoms = bulk("C", "diamond", a=3.567, cubic=True).repeat(2)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    result = run_md(get_teacher("tersoff"), atoms, CFG.protocol, CFG.failure, 1, "x", 0)
    assert result.failure["reason"] == "close_pair" and result.failure["time_ps"] == 0.0
    assert result.frames == []


def test_coordination_diamond_is_sp3_graphite_is_sp2():
    diamond = bulk("C", "diamond", a=3.567).repeat(2)
    graphite = Graphite(symbol="C", latticeconstant={"a": 2.46, "c": 6.70}, size=(2, 2, 1))
    assert coordination_fractions([diamond], 1.85) == {"sp": 0, "sp2": 0, "sp3": 1.0, "other": 0}
    assert coordination_fractions([graphite], 1.85) == {"sp": 0, "sp2": 1.0, "sp3": 0, "other": 0}


def test_rdf_of_diamond_integrates_to_four_neighbours():
    diamond = bulk("C", "diamond", a=3.567, cubic=True)
    r, g = rdf([diamond], 4.0, 400)
    dr = r[1] - r[0]
    shells = 4 / 3 * np.pi * ((r + dr / 2) ** 3 - (r - dr / 2) ** 3)
    density = len(diamond) / diamond.get_volume()
    first_shell = r < 1.85
    assert np.sum(shells[first_shell] * density * g[first_shell]) == pytest.approx(4.0, rel=1e-9)
    assert r[np.nonzero(g)[0][0]] == pytest.approx(3.567 * np.sqrt(3) / 4, abs=dr)
    assert rdf_distance(g, g) == 0.0
    _, g_graphite = rdf([Graphite(symbol="C", latticeconstant={"a": 2.46, "c": 6.70})], 4.0, 400)
    assert rdf_distance(g, g_graphite) > 1.0


def test_teacher_survives_and_broken_model_fails_on_the_same_protocol(starts_file, tmp_path):
    start = read_frames(starts_file)[0]
    teacher = run_md(get_teacher("lcbop"), start, CFG.protocol, CFG.failure, 1, "t", 0)
    assert teacher.failure is None and teacher.time_ps == 0.6
    assert [f.info["time_ps"] for f in teacher.frames][:3] == [0.05, 0.1, 0.15]
    assert len(teacher.frames) == 12 and len(teacher.nve) == 10
    hold_T = [f.info["temperature_K"] for f in teacher.frames if f.info["stage"] == "hold"]
    assert 1500 < np.mean(hold_T) < 4500

    from synthpre.stability.job import model_potential

    broken, _ = model_potential(str(save_tiny_model(tmp_path / "broken.pt", scale=1e4)), False,
                                "fix_external")
    result = run_md(broken, start, CFG.protocol, CFG.failure, 1, "b", 0)
    assert result.failure["reason"] == "large_force" and result.failure["time_ps"] == 0.0
    assert "eV/Å > 30.0 eV/Å" in result.failure["detail"]
    # Without the force criterion the same model heats the cell or crushes a pair within
    # the first check intervals.
    lax = FailureCriteria(10, 0.7, 1e12, 2.0, 0.45, 2.0)
    result = run_md(broken, start, CFG.protocol, lax, 1, "b", 0)
    assert result.failure["reason"] in ("hot", "close_pair", "non_finite", "lost_atoms")
    assert 0 < result.failure["time_ps"] < 0.1


def test_relabelling_the_teachers_own_run_gives_zero_error(starts_file):
    start = read_frames(starts_file)[1]
    lcbop = get_teacher("lcbop")
    result = run_md(lcbop, start, CFG.protocol, CFG.failure, 2, "t", 1)
    e0 = {"C": -1.5}
    part = relabel(result.frames, 5, lcbop, e0, e0)
    assert part["n_frames"] == 5 and part["n_force"] == 5 * 32 * 3
    pooled = pooled_relabel([part])
    assert pooled["force_rmse"] < 1e-6 and abs(pooled["energy_offset_per_atom"]) < 1e-9


def test_job_writes_reference_then_model_results(starts_file, tmp_path):
    # Frames every 10 fs, so even a short-lived random model leaves frames to relabel.
    settings = job_settings(protocol={"dump_every_ps": 0.01})
    ref = run_stability_job(settings, str(starts_file), tmp_path / "ref.json",
                            tmp_path / "ref.extxyz")
    assert [r["run"] for r in ref["runs"]] == ["start0-v1", "start1-v1"]
    assert ref["summary"]["survival_fraction"] == 1.0
    assert all(sum(r["coordination"].values()) == pytest.approx(1.0) for r in ref["runs"])
    model = save_tiny_model(tmp_path / "model.pt")
    out = run_stability_job(settings, str(starts_file), tmp_path / "m.json",
                            tmp_path / "m.extxyz", model=str(model),
                            reference=str(tmp_path / "ref.json"), point="scratch/n3/s1",
                            options={"compile": False, "engine": "fix_external"})
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["point"] == "scratch/n3/s1" and written["teacher"] == "lcbop"
    frames = read_frames(tmp_path / "m.extxyz")
    assert len(frames) == sum(r["n_frames"] for r in written["runs"])
    for run in written["runs"]:
        assert run["relabel"]["n_frames"] == min(4, run["n_frames"])
        if run["survived"]:
            assert run["rdf_distance"] > 0 and run["teacher_coordination"] is not None
        else:
            assert run["failure"]["reason"] in ("model_error", "non_finite", "lost_atoms",
                                                "close_pair", "large_force", "hot",
                                                "lammps_error")
            assert run["rdf_distance"] is None and run["nve_drift_meV_per_atom_ps"] is None
    assert written["summary"]["n_runs"] == 2 and len(frames) > 0
    assert out["summary"]["relabel"]["force_rmse"] > 0
    assert not list(tmp_path.glob(".tmp-*"))
    table = stability_curves([str(tmp_path / "m.json")], str(tmp_path / "ref.json"),
                             str(tmp_path / "stability.csv"), [str(tmp_path / "s.png")])
    csv = pd.read_csv(tmp_path / "stability.csv")
    assert list(csv["mode"]) == ["scratch", "teacher"] and list(csv["labeller"]) == ["none", "lcbop"]
    assert csv.loc[1, "survival_fraction"] == 1.0 and csv.loc[1, "n_runs"] == 2
    fails = sum(not r["survived"] for r in written["runs"])
    assert csv.loc[0, "survival_fraction"] == (2 - fails) / 2 == table.loc[0, "survival_fraction"]
    assert csv.loc[0, "relabel_force_rmse"] == pytest.approx(
        written["summary"]["relabel"]["force_rmse"], rel=1e-5)
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Another protocol than the reference's: refused before any MD.
    other = job_settings(protocol={"dump_every_ps": 0.01, "hold_ps": 0.4})
    with pytest.raises(ValueError, match="another protocol"):
        run_stability_job(other, str(starts_file), tmp_path / "x.json", tmp_path / "x.extxyz",
                          model=str(model), reference=str(tmp_path / "ref.json"),
                          options={"compile": False, "engine": "fix_external"})


@pytest.mark.parametrize("change, message", [
    ({"protocol": {"hold_ps": -1.0}},
     "config field 'stability.protocol.hold_ps': -1.0 is less than or equal to the minimum of 0"),
    ({"protocol": {"warmup_ps": -0.1}}, "'stability.protocol.warmup_ps': -0.1 is less than the "
                                        "minimum of 0"),
    ({"failure": {"speed": 3}}, "config field 'stability.failure': Additional properties are "
                                "not allowed \\('speed' was unexpected\\)"),
    ({"velocity_seeds": []}, "config field 'stability.velocity_seeds': \\[\\] should be non-empty"),
    ({"analysis": {"rdf_bins": "many"}},
     "config field 'stability.analysis.rdf_bins': 'many' is not of type 'integer'"),
    ({"failure": {"min_distance": "near"}}, "'stability.failure.min_distance': 'near' is not "
                                            "valid"),
    ({"starts": {"density_min": 2.5}}, "'stability.starts.density_max' is below density_min"),
])
def test_bad_settings_name_the_field(change, message, starts_file, tmp_path):
    """A job's settings may be written by hand: checked against the config schema's ranges
    (the one place they live), and the window's order, which the schema cannot express."""
    with pytest.raises(ValueError, match=message):
        run_stability_job(job_settings(**change), str(starts_file), tmp_path / "o.json",
                          tmp_path / "o.extxyz")
    assert not (tmp_path / "o.json").exists()


def test_missing_field_is_named():
    broken = copy.deepcopy(STABILITY)
    del broken["analysis"]["rdf_bins"]
    with pytest.raises(ValueError, match="'stability.analysis.rdf_bins' is missing"):
        StabilitySettings.from_config(broken)


def test_bad_start_structures_are_named_before_md(starts_file, tmp_path):
    silicon = tmp_path / "si.extxyz"
    cell = read_frames(starts_file)[0]
    cell.symbols[3] = "Si"
    write_frames(silicon, [cell])
    with pytest.raises(ValueError, match=f"start structures {silicon}: structure 0 has "
                                         r"element\(s\) \['Si'\]"):
        run_stability_job(job_settings(), str(silicon), tmp_path / "o.json", tmp_path / "o.x")
    with pytest.raises(ValueError, match=f"start structures {starts_file}: no periodic cell "
                                         r"with density in \[3.0, 3.5\]"):
        run_stability_job(job_settings(starts={"density_min": 3.0, "density_max": 3.5}),
                          str(starts_file), tmp_path / "o.json", tmp_path / "o.x")
    with pytest.raises(FileNotFoundError, match="start structures /no/such.extxyz not found"):
        run_stability_job(job_settings(), "/no/such.extxyz", tmp_path / "o.json",
                          tmp_path / "o.x")
    # Elements the config allows but the model lacks.
    two = job_settings()
    two["elements"] = ["C", "Si"]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"protocol": STABILITY["protocol"], "teacher": "lcbop", "runs": []}))
    model = save_tiny_model(tmp_path / "model.pt")
    with pytest.raises(ValueError, match=rf"start structures {silicon}: element\(s\) \['Si'\] "
                                         f"unknown to model {model}"):
        run_stability_job(two, str(silicon), tmp_path / "o.json", tmp_path / "o.x",
                          model=str(model), reference=str(ref), options={"compile": False, "engine": "fix_external"})
    assert not (tmp_path / "o.json").exists()


def test_points_parse_and_bad_ones_are_named():
    assert parse_point("pretrain/snap_c") == {"mode": "pretrain", "labeller": "snap_c",
                                              "pretrain_size": "all", "n": None, "seed": None}
    assert parse_point("finetune/lcbop/n25/s3") == {"mode": "finetune", "labeller": "lcbop",
                                                    "pretrain_size": "all", "n": 25, "seed": 3}
    assert parse_point("finetune/lcbop/k100/n25/s3")["pretrain_size"] == "100"
    assert parse_point("pretrain/lcbop/k100")["pretrain_size"] == "100"
    assert parse_point("scratch/n25/s3")["labeller"] == "none"
    for bad in ("scratch/lcbop/n1/s1", "pretrain/x/n1/s1", "finetune/n1/s1", None):
        with pytest.raises(ValueError, match="is not scratch/n<N>/s<seed>"):
            parse_point(bad)


def test_killed_job_leaves_nothing_and_a_rerun_finishes(starts_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    def command(settings):
        (tmp_path / "settings.json").write_text(json.dumps(settings))
        return [sys.executable, "-m", "synthpre", "stability", "--settings",
                f"@{tmp_path / 'settings.json'}", "--starts", str(starts_file),
                "--out", str(tmp_path / "out" / "stability.json"),
                "--frames", str(tmp_path / "out" / "frames.extxyz")]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Four runs of 5 ps that cannot fail; killed as soon as the first has finished.
    long = job_settings(protocol={"hold_ps": 5.0}, velocity_seeds=[1, 2],
                        failure={"min_distance": 0.0, "max_force": 1e9,
                                 "max_temperature_factor": 1e6})
    proc = subprocess.Popen(command(long), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("start0-v1: 5.3 ps, failure: None"), first
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    done = subprocess.run(command(job_settings()), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "stability.json").read_text())["summary"]["n_survived"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["frames.extxyz", "stability.json"]


def test_cli_names_a_bad_field(starts_file, tmp_path):
    import subprocess
    import sys

    settings = json.dumps(job_settings(protocol={"nve_ps": -1}))
    proc = subprocess.run([sys.executable, "-m", "synthpre", "stability", "--settings", settings,
                           "--starts", str(starts_file), "--out", str(tmp_path / "o.json"),
                           "--frames", str(tmp_path / "o.extxyz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "synthpre stability: error: config field 'stability.protocol.nve_ps': -1 is less " \
        "than the minimum of 0" in proc.stderr


def test_stability_runs_the_model_compiled_as_the_run_options_say(tmp_path):
    """model.compile reaches the MD calculator (a run option: changing it reruns nothing),
    whatever the model file was trained with."""
    from synthpre.stability.job import model_potential

    path = str(save_tiny_model(tmp_path / "model.pt"))
    for compile in (True, False):
        potential, _ = model_potential(path, compile, "fix_external")
        layers = potential.make_calculator().model.layers
        assert [layer.compiled for layer in layers] == [compile] * len(layers)


def test_teacher_quenched_starts_are_cells_at_the_window_densities_cooled_to_the_end(tmp_path):
    """stability.starts.source "teacher": count random cells melted and quenched by the teacher
    (LCBOP here), one per density spread over the window, written for the stability jobs."""
    from synthpre import job_settings as slices
    from synthpre.config import complete
    from synthpre.stability.starts import quench_starts

    from defaults import MINIMAL

    synthetic = {**MINIMAL["synthetic"],  # a tight thermostat for a short quench
                 "protocol": {**MINIMAL["synthetic"]["protocol"], "tdamp_fs": 10.0}}
    config = complete({**MINIMAL, "synthetic": synthetic, "stability": {"starts": {
        "source": "teacher", "count": 2, "density_min": 1.8, "density_max": 2.6,
        "quench": {"n_atoms": 16, "stages": [
            {"name": "melt", "T_start": 4000, "T_end": 4000, "duration_ps": 0.05},
            {"name": "quench", "T_start": 4000, "T_end": 300, "duration_ps": 0.2},
            {"name": "relax", "T_start": 300, "T_end": 300, "duration_ps": 0.05}]}}}})
    out = tmp_path / "starts.extxyz"
    cells = quench_starts(slices.stability_starts(config), str(out))
    written = read_frames(out)
    assert len(cells) == len(written) == 2
    for cell, density in zip(written, (1.8, 2.6)):
        assert len(cell) == 16 and cell.pbc.all()
        mass = cell.get_masses().sum() * 1.66053906660  # g/cm^3 from amu / Å^3
        assert mass / cell.get_volume() == pytest.approx(density, rel=1e-6)
        assert cell.info["temperature_K"] < 1500  # quenched from 4000 K towards 300 K
    # the melt moved the atoms away from the random start (synthetic.seed 0 for the first)
    from synthpre.cells import random_cell
    start = random_cell({"C": 16}, 1.8, config["synthetic"]["min_distance"], 0)
    assert not np.allclose(start.positions, written[0].positions, atol=0.1)
    # the same selection the stability jobs apply keeps both
    settings = StabilitySettings.from_config(config["stability"])
    assert len(select_starts(written, settings.starts, ["C"], str(out))) == 2


def test_teacher_starts_come_from_their_own_rule_and_a_jamming_window_is_refused(tmp_path):
    import subprocess

    import yaml
    from defaults import MINIMAL
    from snakemake_run import REPO, SNAKEMAKE

    from synthpre.config import complete
    from synthpre.config_check import ConfigError
    from synthpre.config_check import check_stability_config

    (tmp_path / "override.yaml").write_text(yaml.safe_dump({
        "real": {"source": str(REPO / "data/demo/carbon-dft.extxyz")},
        "stability": {"starts": {"source": "teacher"}}}))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "-p", "--configfile",
                           str(REPO / "configs/tiny.yaml"),
                           str(tmp_path / "override.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "synthpre stability-starts --settings" in proc.stdout
    assert "--starts results/tiny/stability/starts.extxyz" in proc.stdout
    jammed = complete({**MINIMAL, "stability": {"starts": {"source": "teacher",
                                                           "density_max": 12.0}}})
    with pytest.raises(ConfigError, match="'stability.starts.density_max': density 12.0"):
        check_stability_config(jammed)


# ---------------------------------------------------------------- element-aware stability

def test_thresholds_left_auto_come_from_the_elements_not_carbon():
    """The schema's defaults (auto) give a silicon study Si-Si thresholds from covalent
    radii (close pair 1.00 Å, coordination 2.78 Å), carbon its own (0.68, 1.90), and a
    binary one per pair; a number applies to every pair."""
    from defaults import MINIMAL

    from synthpre.config import complete

    def resolved(elements):
        config = complete({**MINIMAL, "elements": elements})
        return StabilitySettings.from_config(config["stability"], elements)

    si = resolved(["Si"])
    assert si.failure.min_distance == {"Si-Si": 1.0}
    assert si.analysis.coordination_cutoff == {"Si-Si": 2.78}
    c = resolved(["C"])
    assert c.failure.min_distance == {"C-C": 0.68} and c.analysis.coordination_cutoff == {"C-C": 1.9}
    assert resolved(["Si", "Li"]).failure.min_distance == {"Li-Li": 1.15, "Li-Si": 1.08,
                                                           "Si-Si": 1.0}
    assert StabilitySettings.from_config(STABILITY, ["Si"]).failure.min_distance == {"Si-Si": 0.7}


def test_close_pairs_are_judged_per_element_pair():
    si = StabilitySettings.from_config(STABILITY | {"failure": {**STABILITY["failure"],
                                                                "min_distance": "auto"}},
                                       ["Si"]).failure
    dimer = Atoms("Si2", positions=[[1, 1, 1], [1.9, 1, 1]], cell=[8, 8, 8], pbc=True)
    assert detect(dimer, np.zeros((2, 3)), -1.0, 300.0, 1200.0, si) == \
        ("close_pair", "Si-Si pair at 0.900 Å < 1.0 Å")  # carbon's 0.7 would let it pass
    dimer.positions[1] = [2.3, 1, 1]
    assert detect(dimer, np.zeros((2, 3)), -1.0, 300.0, 1200.0, si) is None


def test_coordination_is_counted_per_element_pair_and_named_sp_only_for_carbon():
    from synthpre.stability.structure import (coordination_by_pair, coordination_fractions,
                                             pair_thresholds)

    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    cut = pair_thresholds(["Si"], "auto", 1.25)
    assert coordination_fractions([silicon], cut) == {"Si:4": 1.0}
    assert coordination_by_pair([silicon], cut) == {"Si-Si": 4.0}
    sic = bulk("SiC", "zincblende", a=4.36, cubic=True)
    cut = pair_thresholds(["C", "Si"], "auto", 1.25)
    assert coordination_by_pair([sic], cut) == {"C-C": 0.0, "C-Si": 4.0, "Si-C": 4.0,
                                                "Si-Si": 0.0}
    assert coordination_fractions([sic], cut) == {"C:4": 1.0, "Si:4": 1.0}
    diamond = bulk("C", "diamond", a=3.567)
    assert coordination_fractions([diamond], pair_thresholds(["C"], "auto", 1.25))["sp3"] == 1.0


def test_start_cells_too_small_for_a_temperature_are_warned_before_any_job(tmp_path):
    """8-atom cells fluctuate by 29 % in temperature: the hot limit (2 x target) is 3.5
    standard deviations away and fails correct potentials by chance; 16 atoms pass."""
    from defaults import MINIMAL

    from synthpre.config import complete
    from synthpre.config_check import config_warnings
    from synthpre.stability.settings import small_cell_problem

    assert "use cells of at least 11 atoms" in small_cell_problem(8, 2.0)
    assert small_cell_problem(16, 2.0) is None and small_cell_problem(8, 3.0) is None
    small = tmp_path / "small.extxyz"
    write_frames(small, [bulk("C", "diamond", a=3.567, cubic=True)])  # 8 atoms, 3.5 g/cm^3
    config = complete({**MINIMAL, "real": {"source": str(small)},
                       "stability": {"starts": {"source": str(small), "density_min": 3.0,
                                                "density_max": 4.0}}})
    (warning,) = [w for w in config_warnings(config) if "stability" in w]
    assert "start cells of 8 atoms" in warning and "3.5 standard deviations" in warning
    big = complete({**config, "stability": {"starts": {"source": "teacher"}}})  # 64 atoms
    assert not [w for w in config_warnings(big) if "stability" in w]


def test_a_survivor_far_from_its_teacher_is_unphysical_in_the_json_and_the_csv(starts_file,
                                                                                tmp_path):
    """A random model that cannot fail (the detector is off) survives, but its forces are
    far from the teacher's: with the teacher agreeing exactly with the 'real' test labels
    (gap 0) and a claimed test error of 0.01 eV/Å it is unphysical; a lax factor keeps it."""
    from synthpre.lammps_system import single_point
    from synthpre.shard_files import write_shard

    lcbop = get_teacher("lcbop")
    records = []
    for atoms in read_frames(starts_file):
        energy, forces = single_point(atoms, lcbop)
        records.append({"numbers": atoms.numbers, "positions": atoms.positions,
                        "cell": atoms.cell.array, "pbc": atoms.pbc, "energy": energy,
                        "forces": forces})
    write_shard(tmp_path / "test.h5", records)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_force_rmse": 0.01}))
    off = {"min_distance": 0.0, "max_force": 1e9, "max_temperature_factor": 1e6}
    short = {"warmup_ps": 0.02, "hold_ps": 0.05, "nve_ps": 0.02, "dump_every_ps": 0.01}
    settings = job_settings(protocol=short, failure=off, starts={"count": 1})
    ref = run_stability_job(settings, str(starts_file), tmp_path / "ref.json",
                            tmp_path / "ref.extxyz", test=str(tmp_path / "test.h5"))
    assert ref["teacher_vs_real_test"]["force_rmse"] < 1e-6
    assert [r["outcome"] for r in ref["runs"]] == ["survived"]
    model = str(save_tiny_model(tmp_path / "model.pt"))
    for factor, outcome in ((2.0, "unphysical"), (1e6, "survived")):
        lax = job_settings(protocol=short, failure={**off, "unphysical_factor": factor},
                           starts={"count": 1})
        out = run_stability_job(lax, str(starts_file), tmp_path / f"{factor}.json",
                                tmp_path / f"{factor}.extxyz", model=model,
                                reference=str(tmp_path / "ref.json"),
                                metrics=str(tmp_path / "metrics.json"), point="scratch/n3/s1",
                                options={"compile": False, "engine": "fix_external"})
        (run,) = json.loads((tmp_path / f"{factor}.json").read_text())["runs"]
        assert run["survived"] and run["outcome"] == outcome
        assert out["unphysical_rule"]["force_rmse_threshold"] == pytest.approx(factor * 0.01,
                                                                                rel=1e-3)
        assert out["summary"]["n_unphysical"] == (outcome == "unphysical")
    stability_curves([str(tmp_path / "2.0.json")], str(tmp_path / "ref.json"),
                     str(tmp_path / "stability.csv"), [str(tmp_path / "s.png")])
    csv = pd.read_csv(tmp_path / "stability.csv").set_index("mode")
    assert csv.loc["scratch", "n_unphysical"] == 1 and csv.loc["scratch", "stable_fraction"] == 0
    assert csv.loc["scratch", "survival_fraction"] == 1.0
    assert csv.loc["scratch", "unphysical_force_threshold"] == pytest.approx(0.02, rel=1e-3)
    assert csv.loc["teacher", "stable_fraction"] == 1.0
    assert csv.loc["scratch", "cn_C-C"] >= 0  # coordination per element pair
