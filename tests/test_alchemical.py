"""Alchemical labellers (synthpre.alchemical): another element's teacher data, transmuted to
the study's element with cell and positions scaled, through the ordinary md -> label -> shard
stages; the labels obey F = -dE/dr in the scaled coordinates; adding one to a study leaves
every other job as it was."""
from __future__ import annotations

import copy
import re
import subprocess

import numpy as np
import pytest
import yaml
from ase import Atoms
from defaults import MINIMAL

from synthpre import job_settings
from synthpre.alchemical import Alchemical
from synthpre.cells import density_of, random_cell
from synthpre.config import complete
from synthpre.config_check import ConfigError, check_config
from synthpre.frames import read_frames
from synthpre.label import label_frames, label_job
from synthpre.lammps_system import single_point
from synthpre.md import run_md_job
from synthpre.teachers import get_teacher

from snakemake_run import REPO, SNAKEMAKE

SCALE = 0.655  # C-C 1.54 / Si-Si 2.35 Å
# the built-in Tersoff (SiC.tersoff) covers Si: a cheap source teacher for Si -> C
SPEC = {"teacher": "tersoff", "from": "Si", "to": "C", "scale": SCALE}


def _config(spec=None, name="tersoff_si_as_c", **synthetic) -> dict:
    config = copy.deepcopy(MINIMAL)
    config["real"]["source"] = str(REPO / "data/demo/carbon-dft.extxyz")
    config["synthetic"].update(labellers=["lcbop", name],
                               alchemical={name: spec or SPEC}, **synthetic)
    return complete(config)


def _si_frame(seed=3, n=16, density=2.0) -> Atoms:
    atoms = random_cell({"Si": n}, density, 2.0, seed)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_alchemical_frames_have_the_target_element_scaled_cell_and_source_labels():
    """label_job: the source teacher's labels on the Si frame, then Si -> C, cell and
    positions x scale, energy (relative to the isolated atom) kept, forces / scale."""
    config = _config()
    si = _si_frame()
    (source,) = label_frames([si], get_teacher("tersoff"))
    (frame,) = label_job(job_settings.label(config, "tersoff_si_as_c"), "tersoff_si_as_c",
                         [si])
    assert set(frame.get_chemical_symbols()) == {"C"} and len(frame) == len(si)
    np.testing.assert_allclose(np.array(frame.cell), SCALE * np.array(si.cell), rtol=1e-12)
    np.testing.assert_allclose(frame.positions, SCALE * si.positions, rtol=1e-12)
    assert frame.info["energy"] == pytest.approx(source.info["energy"], rel=1e-12)
    np.testing.assert_allclose(frame.arrays["forces"], source.arrays["forces"] / SCALE,
                               rtol=1e-12)
    assert abs(source.info["energy"]) > 1.0 and np.abs(source.arrays["forces"]).max() > 0.5
    # the source's isolated-atom energy, now the target element's; the study's labeller name
    assert frame.info["e0_C"] == source.info["e0_Si"] and "e0_Si" not in frame.info
    assert frame.info["labeller"] == "tersoff_si_as_c"
    assert frame.info["alchemical"] == "tersoff:Si->C*0.655,E*1,F:gradient"
    # an ordinary labeller's settings carry no transform: its frames stay as labelled
    (plain,) = label_job(job_settings.label(config, "tersoff"), "tersoff", [si])
    assert plain.get_chemical_symbols() == si.get_chemical_symbols()


@pytest.mark.parametrize("energy_scale", [1.0, 1.6])
def test_transformed_forces_are_minus_the_gradient_of_the_transformed_energy(energy_scale):
    """F' = -dE'/dr' by central differences, where E'(r') = a (E_Si(r'/s) - N E0_Si) is the
    source teacher evaluated at the unscaled positions. The paper's unscaled forces are not
    (they are off by the factor s), which this check would catch."""
    teacher = get_teacher("tersoff")
    alch = Alchemical.from_config("x", {**SPEC, "energy_scale": energy_scale,
                                        "forces": "gradient"})
    (frame,) = [alch.transform(a) for a in label_frames([_si_frame(seed=5)], teacher)]
    e0 = frame.info["e0_C"] / energy_scale  # the source's E0(Si)

    def energy(positions):
        si = Atoms(["Si"] * len(frame), positions=positions / SCALE,
                   cell=np.array(frame.cell) / SCALE, pbc=True)
        return energy_scale * (single_point(si, teacher)[0] - len(si) * e0)

    assert energy(frame.positions) == pytest.approx(frame.info["energy"], abs=1e-9)
    h = 1e-4
    for atom, axis in [(0, 0), (3, 1), (7, 2), (11, 0)]:
        plus, minus = frame.positions.copy(), frame.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(energy(plus) - energy(minus)) / (2 * h)
        assert frame.arrays["forces"][atom, axis] == pytest.approx(numeric, abs=2e-4), \
            (atom, axis)
    unscaled = Alchemical.from_config("x", {**SPEC, "energy_scale": energy_scale,
                                            "forces": "unscaled"})
    (paper,) = [unscaled.transform(a) for a in label_frames([_si_frame(seed=5)], teacher)]
    np.testing.assert_allclose(paper.arrays["forces"] / SCALE, frame.arrays["forces"])


def test_the_md_job_runs_the_source_teacher_on_the_source_element(tmp_path):
    """An alchemical labeller's MD job: Si cells at the density that becomes the job's
    (carbon) density once scaled; the frames, labelled and transformed, have that density."""
    config = _config(protocol={**MINIMAL["synthetic"]["protocol"], "dump_every_ps": 0.025})
    settings = job_settings.md(config, "tersoff_si_as_c")
    job = "d2.5-T3000-r0"
    status = run_md_job(settings, "tersoff_si_as_c", job, str(tmp_path / "f.extxyz"),
                        str(tmp_path / "md.json"))
    frames = read_frames(tmp_path / "f.extxyz")
    assert status["failure"] is None and len(frames) == status["n_frames"] > 0
    assert status["teacher"] == "tersoff" and status["traj_id"] == f"tersoff_si_as_c/{job}"
    assert {s for a in frames for s in a.get_chemical_symbols()} == {"Si"}
    expected = 2.5 * 28.0855 / 12.011 * SCALE**3
    assert density_of(frames[0]) == pytest.approx(expected, rel=1e-3)
    labelled = label_job(job_settings.label(config, "tersoff_si_as_c"), "tersoff_si_as_c",
                         frames[:2])
    assert [density_of(a) for a in labelled] == pytest.approx([2.5, 2.5], rel=1e-9)
    assert [a.info["density"] for a in labelled] == pytest.approx([2.5, 2.5], rel=1e-9)
    # no pair closer than the study's min_distance once scaled (1.0 / scale in the Si MD)
    start = random_cell({"Si": 8}, expected, 1.0 / SCALE, 1)
    assert min(start.get_all_distances(mic=True)[np.triu_indices(8, 1)]) * SCALE >= 1.0


def test_element_coverage_accepts_the_source_element_and_names_what_is_uncovered():
    check_config(_config(), read_data=False)  # tersoff covers Si: accepted
    # the Si SNAP of the alchemical example covers Si only, yet the study is carbon
    snap_si = {"pair_style": "snap", "elements": ["Si"], "pair_coeff":
               "* * {potentials}/Si_Zuo_JPCA2020.quadratic.snapcoeff "
               "{potentials}/Si_Zuo_JPCA2020.quadratic.snapparam {elements}"}
    config = _config({**SPEC, "teacher": "snap_si"})
    config["teachers"] = {"snap_si": snap_si}
    check_config(config, read_data=False)
    # lcbop is carbon only: as a source teacher for Si it is refused, naming the field
    with pytest.raises(ConfigError, match=r"synthetic\.alchemical\.tersoff_si_as_c.*"
                                          r"does not cover element\(s\) \['Si'\]"):
        check_config(_config({**SPEC, "teacher": "lcbop"}), read_data=False)
    # an ordinary labeller is still checked against the study's elements
    config = _config()
    config["synthetic"]["labellers"].append("snap_si")
    config["teachers"] = {"snap_si": snap_si}
    with pytest.raises(ConfigError, match=r"'synthetic\.labellers'.*snap_si.*\['C'\]"):
        check_config(config, read_data=False)
    with pytest.raises(ConfigError, match=r"alchemical\.tersoff_si_as_c\.to.*Ge is not in"):
        check_config(_config({**SPEC, "to": "Ge"}), read_data=False)
    with pytest.raises(ConfigError, match=r"'tersoff' is a teacher's name"):
        check_config(_config(name="tersoff"), read_data=False)


def _commands(tmp_path, name: str, extra: dict) -> set[str]:
    """The shell commands of a dry run of the tiny study with ``extra`` merged in."""
    workdir = tmp_path / name
    workdir.mkdir()
    tiny = yaml.safe_load((REPO / "configs/tiny.yaml").read_text())
    tiny["real"]["source"] = str(REPO / "data/demo/carbon-dft.extxyz")
    tiny["synthetic"].update(extra)
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "-p",
                           "--configfile", str(workdir / "config.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    commands = re.findall(r"^Shell command: (.*)$", proc.stdout, re.M)
    assert commands
    return {c.replace(str(workdir), "WORKDIR") for c in commands}


def test_adding_an_alchemical_labeller_leaves_every_other_job_as_it_was(tmp_path):
    """Snakemake reruns a finished job when its params, input files or shell command
    change: every job of the study without the labeller keeps its exact command (settings
    JSON, inputs) with it, and the new jobs are the labeller's own, plus the tables that
    list every model (aggregate, stability_curves)."""
    before = _commands(tmp_path, "before", {})
    after = _commands(tmp_path, "after", {
        "labellers": ["snap_c", "lcbop", "si_as_c"],
        "alchemical": {"si_as_c": {"teacher": "tersoff", "from": "Si", "to": "C",
                                   "scale": SCALE}}})
    def tables(commands):  # the two tables that list every model
        return {c for c in commands
                if c.startswith(("synthpre aggregate", "synthpre stability-curves"))}

    assert len(tables(before)) == len(tables(after)) == 2
    assert before - tables(before) < after  # no other job of the study changes
    new = after - before - tables(after)
    assert all("si_as_c" in c for c in new)
    kinds = {re.match(r'(?:"\$\(command -v synthpre\)"|synthpre) ([a-z-]+)', c).group(1)
             for c in new}
    assert {"md", "label", "shard", "train", "evaluate", "stability"} <= kinds
    assert all("si_as_c" in c for c in tables(after) - tables(before))
    md = [c for c in new if c.startswith("synthpre md")]
    assert len(md) == 2 and all('"from": "Si"' in c and "md/si_as_c/" in c for c in md)


def test_the_alchemical_example_plans_si_md_for_its_carbon_study(tmp_path):
    """configs/alchemical.yaml alone (dry run): the Si SNAP's MD in md/snap_si_as_c/, its
    labels read those frames, snap_c's labels the carbon MD; both pre-trained."""
    (tmp_path / "data").symlink_to(REPO / "data")
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "-p",
                           "--configfile", str(REPO / "configs/alchemical.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    commands = re.findall(r"^Shell command: (.*)$", proc.stdout, re.M)
    md = [c for c in commands if c.startswith("synthpre md")]
    si = [c for c in md if "--teacher snap_si_as_c" in c]
    assert len(md) == 8 and len(si) == 4
    assert all('"teacher": "snap_si"' in c and "Si_Zuo_JPCA2020" in c for c in si)
    labels = [c for c in commands if c.startswith("synthpre label")]
    assert all(("md/snap_si_as_c/" in c) == ("--labeller snap_si_as_c" in c) for c in labels)
    assert len([c for c in commands if "--stage pretrain" in c]) == 2
