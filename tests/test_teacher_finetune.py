"""Fine-tuned foundation teachers (synthpre.teacher_finetune): CHGNet fine-tuned with its own
trainer on a few real Li-Si cells moves towards their DFT forces, reads only the training pool
(never the test set), drives ``fix external`` MD like the raw model, and its rule sits before
MD in the workflow; changing its fine-tuning replans exactly what it made."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake_run import REPO, SNAKEMAKE

from synthpre import job_settings
from synthpre.aggregate import add_teacher_knowledge
from synthpre.config import complete
from synthpre.evaluate import teacher_knowledge
from synthpre.lammps_system import LammpsSystem
from synthpre.real_data import ingest, subset_order
from synthpre.shard_files import read_shard
from synthpre.teacher_finetune import run_teacher_finetune_job, records_to_atoms
from synthpre.teachers import get_teacher

torch.set_num_threads(1)
N, SEED = 4, 1
FINETUNE = {"n": N, "seed": SEED, "epochs": 2, "lr": 1e-3, "batch_size": 4,
            "energy_weight": 1.0, "force_weight": 1.0, "torch_seed": 0}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """CHGNet fine-tuned for 2 epochs on 4 cells of the Li-Si example's real training pool,
    with the test and validation files deleted first: only the pool can be read."""
    real = tmp_path_factory.mktemp("real")
    ingest(str(REPO / "data" / "lisi" / "lisi-dft.extxyz"), str(real), ["Li", "Si"],
           e0="file", test_fraction=0.25, split_seed=0, val_fraction=0.1, val_max=100,
           exclude_config_types=[])
    test = read_shard(real / "test.h5")
    (real / "test.h5").unlink()
    (real / "val.h5").unlink()
    out = real.parent / "teacher" / "model.pth"
    summary = run_teacher_finetune_job({"name": "chgnet-ft", "base": "chgnet-0.3",
                                        "elements": ["Li", "Si"], "finetune": FINETUNE},
                                       str(real / "pool.h5"), str(out))
    return {"summary": summary, "model": out, "pool": read_shard(real / "pool.h5"),
            "test": test, "pool_path": real / "pool.h5"}


def test_finetuning_lowers_the_force_error_on_its_real_cells(tuned):
    s = tuned["summary"]
    # measured: 0.28 -> 0.23 eV/A (8 cells); a fall of at least 5 % on 4 cells
    assert s["force_rmse_after"] < 0.95 * s["force_rmse_before"], s
    assert s["real_structures"] == N
    saved = json.loads(Path(f"{tuned['model']}.json").read_text())
    assert saved["force_rmse_after"] == s["force_rmse_after"]
    assert not list(tuned["model"].parent.glob(".tmp-*"))  # written atomically


def test_it_saw_the_seeds_subset_of_the_pool_and_no_test_cell(tuned):
    pool, test = tuned["pool"], tuned["test"]
    expected = [int(i) for i in subset_order(len(pool), SEED)[:N]]
    assert tuned["summary"]["pool_indices"] == expected
    seen = [pool[i]["positions"] for i in expected]
    for record in test:
        assert not any(p.shape == record["positions"].shape
                       and np.allclose(p, record["positions"]) for p in seen)


def test_finetuned_file_drives_fix_external_md(tuned):
    """Through ``fix external`` the fine-tuned teacher gives its calculator's forces (not the
    raw model's), and a few MD steps stay finite."""
    spec = {"chgnet-ft": {"base": "chgnet-0.3", "finetune": FINETUNE,
                          "model_path": str(tuned["model"])}}
    teacher = get_teacher("chgnet-ft", spec)
    teacher.check()
    cell = records_to_atoms([tuned["pool"][0]])[0]
    direct = cell.copy()
    direct.calc = teacher.make_calculator()
    f_tuned = direct.get_forces()
    raw = cell.copy()
    raw.calc = get_teacher("chgnet-0.3").make_calculator()
    assert np.abs(raw.get_forces() - f_tuned).max() > 1e-3  # another model
    system = LammpsSystem(cell, teacher)
    try:
        _, forces = system.single_point()
        np.testing.assert_allclose(forces, f_tuned, rtol=0, atol=1e-5)
        system.lmp.commands_list(["timestep 0.001", "velocity all create 600 5 mom yes rot no",
                                  "fix nve all nve", "run 5"])
        assert system.callback_error is None
        assert np.isfinite(system.potential_energy())
    finally:
        system.close()


def test_more_structures_than_the_pool_is_refused_naming_the_field(tuned, tmp_path):
    with pytest.raises(ValueError, match=r"teachers.chgnet-ft.finetune.n' asks for 100"):
        run_teacher_finetune_job({"name": "chgnet-ft", "base": "chgnet-0.3",
                                  "elements": ["Li", "Si"], "finetune": {**FINETUNE, "n": 100}},
                                 str(tuned["pool_path"]), str(tmp_path / "model.pth"))
    assert not (tmp_path / "model.pth").exists()


def test_sevennet_base_and_a_missing_file_are_refused_by_name():
    with pytest.raises(ValueError, match="fine-tuning base 'sevennet-0' is not supported"):
        get_teacher("sn-ft", {"sn-ft": {"base": "sevennet-0", "finetune": {}}})
    teacher = get_teacher("ft", {"ft": {"base": "chgnet-0.3", "finetune": {},
                                        "model_path": "/nonexistent/model.pth"}})
    with pytest.raises(FileNotFoundError, match="/nonexistent/model.pth"):
        teacher.check()


def _config(**finetune) -> dict:
    lisi = yaml.safe_load((REPO / "configs" / "lisi-finetuned.yaml").read_text())
    lisi["teachers"]["chgnet-ft"]["finetune"] = finetune
    return complete(lisi)


def test_subset_defaults_to_the_largest_n_of_the_first_seed():
    config = _config(epochs=3)
    job = job_settings.teacher_finetune(config, "chgnet-ft")
    assert job["finetune"]["n"] == 16 and job["finetune"]["seed"] == 1
    assert job["finetune"]["epochs"] == 3 and job["finetune"]["lr"] > 0  # schema defaults
    assert job_settings.teacher_real_structures(config, "chgnet-ft") == 16
    assert job_settings.teacher_real_structures(config, "sevennet-0") == 16  # MD teacher
    assert job_settings.shard(config, "chgnet-ft")["teacher_real_structures"] == 16
    spec = job_settings.md(config, "chgnet-ft")["teachers"]["chgnet-ft"]
    assert spec["model_path"] == "results/lisi-finetuned/teachers/chgnet-ft/model.pth"
    config = _config(n=6, seed=2)
    assert job_settings.teacher_finetune(config, "chgnet-ft")["finetune"]["n"] == 6
    # a raw teacher study keeps its shard params (no reruns of finished studies)
    raw = complete(yaml.safe_load((REPO / "configs" / "lisi.yaml").read_text()))
    assert "teacher_real_structures" not in job_settings.shard(raw, "chgnet-0.3")


def test_curve_table_records_what_the_teacher_saw(tmp_path):
    import pandas as pd

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"labeller": "chgnet-ft", "teacher_real_structures": 16}))
    rows = [{"mode": mode, "labeller": lab, "n_pretrain": 8, "n": 4, "seed": 1,
             "test_energy_rmse": 0.01, "test_forces_rmse": 0.1}
            for mode, lab in (("scratch", "none"), ("finetune", "chgnet-ft"))]
    df = pd.DataFrame(rows)
    table = df.groupby(["mode", "labeller", "n"]).size().reset_index()
    table = add_teacher_knowledge(table, [str(manifest)])
    assert dict(zip(table["mode"], table["teacher_real_structures"])) == \
        {"scratch": 0, "finetune": 16}
    # metrics.json of a point: from its labeller's manifest; scratch saw no teacher
    assert teacher_knowledge("finetune", str(manifest)) == {"teacher_real_structures": 16}
    assert teacher_knowledge("scratch", None) == {"teacher_real_structures": 0}


# --- the workflow: a finished study (outputs created and marked done with --touch) ---------

OVERRIDE = {"teachers": {"chgnet-ft": {"base": "chgnet-0.3", "finetune": {"epochs": 1}}},
            "synthetic": {"teacher": "chgnet-ft", "labellers": ["chgnet-ft", "lcbop"]}}


def _snakemake(workdir: Path, override: dict, *args: str) -> str:
    (workdir / "plan.yaml").write_text(yaml.safe_dump(
        {**override, "real": {"source": str(REPO / "data" / "demo" / "carbon-dft.extxyz")}}))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args, "--configfile",
                           str(REPO / "configs" / "tiny.yaml"), str(workdir / "plan.yaml")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _plan(workdir: Path, override: dict) -> dict[str, int]:
    counts = {}
    for line in _snakemake(workdir, override, "-n", "--quiet", "rules").splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and words[0] not in ("total", "all"):
            counts[words[0]] = int(words[1])
    return counts


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny study with a fine-tuned CHGNet teacher, every output present and recorded as
    made with these settings (``--touch --forceall``: no job runs)."""
    workdir = tmp_path_factory.mktemp("ft-study")
    summary = _snakemake(workdir, OVERRIDE, "--summary")
    files = [line.split("\t")[0] for line in summary.splitlines()[1:] if line.strip()]
    assert "results/tiny/teachers/chgnet-ft/model.pth" in files
    for name in files:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).touch()
    _snakemake(workdir, OVERRIDE, "--touch", "--forceall", "--cores", "1")
    assert _plan(workdir, OVERRIDE) == {}
    return workdir


@pytest.mark.slow
def test_dry_run_plans_the_teacher_finetune_before_md(tmp_path):
    out = _snakemake(tmp_path, OVERRIDE, "-n")
    md_jobs = [block for block in out.split("rule ")[1:] if block.startswith("md:")]
    assert len(md_jobs) == 2
    assert all("input: results/tiny/teachers/chgnet-ft/model.pth" in b for b in md_jobs)
    assert "rule teacher_finetune:" in out and "input: results/tiny/real/pool.h5\n" in out


@pytest.mark.slow
def test_changing_its_finetuning_replans_only_what_it_made(finished):
    changed = {**OVERRIDE, "teachers": {"chgnet-ft": {"base": "chgnet-0.3",
                                                      "finetune": {"epochs": 2}}}}
    plan = _plan(finished, changed)
    # its model, the MD it drives, both labellers' labels of those frames and all that
    # follows; scratch (no synthetic data) and the real data stay; scratch's stability
    # runs again (its teacher relabels the frames)
    assert plan["teacher_finetune"] == 1 and plan["md"] == 2 and plan["label"] == 4
    assert plan["shard"] == 2 and plan["pretrain"] == 4 and plan["finetune"] == 8
    assert plan["evaluate"] == 8  # the fine-tuned points, not scratch's
    assert "scratch" not in plan and "real_data" not in plan
    # a smaller n for the students: the teacher's subset (largest n) stays, no refit
    smaller = {**OVERRIDE, "finetune": {"n_train": [2, 3, 6]}}
    assert "teacher_finetune" not in _plan(finished, smaller)


@pytest.mark.slow
def test_lisi_finetuned_config_plans_here(tmp_path):
    """configs/lisi-finetuned.yaml (standalone): one teacher fine-tuning before its 4 MD
    trajectories, one labeller, no DFT job (it reads the shipped DFT file)."""
    (tmp_path / "data").symlink_to(REPO / "data")
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--quiet", "rules",
                           "--configfile", str(REPO / "configs" / "lisi-finetuned.yaml")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(line.split() for line in proc.stdout.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["teacher_finetune"] == "1" and counts["md"] == "4" and counts["label"] == "4"
    assert "dft" not in counts and counts["pretrain"] == "1" and counts["scratch"] == "6"
