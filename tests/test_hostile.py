"""Hostile and stale input: no config string runs as a command, every file a result depends
on is an input whose content (not its time) decides, corrupt shards are refused wherever they
are read, and late failures become early ones that name the file or field."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk
from defaults import MINIMAL

from synthpre.config import complete
from synthpre.config_check import NAME_PATTERN, ConfigError, check_config, check_names
from synthpre.frames import read_frames, write_frames
from synthpre.lammps_runtime import potentials_dir
from synthpre.lammps_system import single_point
from synthpre.provenance import code_version, other_versions
from synthpre.real_data import read_real
from synthpre.shard import synthetic_validation
from synthpre.teachers import Teacher, get_teacher

from snakemake_run import REPO, SNAKEMAKE, job_counts, snakemake

SYNTHPRE = str(Path(sys.executable).parent / "synthpre")
DEMO = REPO / "data/demo/carbon-dft.extxyz"
HOSTILE_NAMES = ["x$(touch pwned)", "a b", "a/b", "../up", "-rf", "x;touch pwned", ""]


def dry_run(workdir: Path, override: dict, *targets: str) -> subprocess.CompletedProcess:
    """`snakemake -n` of the tiny config plus ``override`` in ``workdir``."""
    (workdir / "hostile.yaml").write_text(yaml.safe_dump(override))
    return subprocess.run([*SNAKEMAKE, *targets, "--directory", str(workdir), "-n", "--quiet",
                           "rules", "--configfile", str(REPO / "config.yaml"),
                           str(REPO / "configs/tiny.yaml"), str(workdir / "hostile.yaml")],
                          capture_output=True, text=True, timeout=300)


# --- 1. names and shell quoting -------------------------------------------------------------

def test_the_schema_and_the_library_share_one_name_pattern():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["definitions"]["name"]["pattern"] == NAME_PATTERN
    ref = {"$ref": "#/definitions/name"}
    props = schema["properties"]
    assert props["run"] == ref and props["teachers"]["propertyNames"] == ref
    assert props["synthetic"]["properties"]["teacher"] == ref
    assert props["synthetic"]["properties"]["labellers"]["items"] == ref


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("field", ["run", "synthetic.teacher", "synthetic.labellers", "teachers"])
def test_a_name_outside_the_pattern_is_refused_naming_its_field(name, field):
    config = json.loads(json.dumps(MINIMAL))
    if field == "run":
        config["run"] = name
    elif field == "synthetic.teacher":
        config["synthetic"]["teacher"] = name
    elif field == "synthetic.labellers":
        config["synthetic"]["labellers"] = ["lcbop", name]
    else:
        config["teachers"] = {name: {"pair_style": "lcbop", "pair_coeff": "* * C.lcbop C",
                                     "elements": ["C"]}}
    with pytest.raises(ConfigError, match=f"config field '{re.escape(field)}'"):
        check_names(config)


@pytest.mark.parametrize("override, where", [
    ({"synthetic": {"teacher": "x$(touch pwned)"}}, "['synthetic']['teacher']"),
    ({"synthetic": {"labellers": ["snap_c", "lc bop"]}}, "['synthetic']['labellers'][1]"),
    ({"run": "../outside"}, "['run']"),
    ({"teachers": {"a/b": {"pair_style": "lcbop", "pair_coeff": "* * C.lcbop C",
                           "elements": ["C"]}}}, "['teachers']"),
])
def test_snakemake_refuses_a_hostile_name_before_any_job(tmp_path, override, where):
    override = {"real": {"source": str(DEMO)}, **override}
    proc = dry_run(tmp_path, override)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert where in text and "does not match" in text, text[-2000:]
    assert not list(tmp_path.rglob("pwned")) and not (tmp_path / "results").exists()


def test_every_wildcard_and_file_in_every_shell_is_quoted():
    """Rule shells quote every wildcard, input, output, log and settings string ({...:q});
    the only unquoted fields are argument lists built with shlex.quote or launchers from the
    profile (common.smk says which)."""
    unquoted = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        for field in re.findall(r"\{((?:wildcards|input|output|log|resources|params)[^{}]*)\}",
                                smk.read_text()):
            allowed = field.split(":")[0] in ("params.mpi", "params.launch", "params.size",
                                               "params.extra", "params.forgetting")
            if not field.endswith(":q") and not allowed:
                unquoted.append(f"{smk.name}: {{{field}}}")
    assert unquoted == []


# --- 1. LAMMPS strings ----------------------------------------------------------------------

HOSTILE_LAMMPS = [
    ("pair_style", "lcbop\nshell touch pwned"),
    ("pair_style", "lcbop\rshell touch pwned"),
    ("pair_coeff", "* * {potentials}/C.lcbop {elements}\ninclude evil.in"),
    ("pair_coeff", "* * {potentials}/C.lcbop {elements} &"),
    ("pair_style", "lcbop ${x}"),
    ("pair_style", "lcbop $(v_a*2)"),
    ("pair_coeff", "* * v_file {elements}"),
    ("pair_coeff", "* * {potentials}/C.lcbop {elements} # and the rest"),
    ("pair_style", "python 2.5"),
    ("pair_coeff", "* * {potentials.__class__} {elements}"),
]


@pytest.mark.parametrize("key, value", HOSTILE_LAMMPS)
def test_a_lammps_command_in_a_teacher_string_is_refused_at_parse_time(key, value):
    spec = {"pair_style": "lcbop", "pair_coeff": "* * {potentials}/C.lcbop {elements}",
            "elements": ["C"], key: value}
    with pytest.raises(ValueError, match=f"config field 'teachers.evil.{key}'"):
        get_teacher("evil", {"evil": spec})
    config = complete({**MINIMAL, "teachers": {"evil": spec},
                       "synthetic": {**MINIMAL["synthetic"], "labellers": ["evil"]}})
    with pytest.raises(ConfigError, match=f"teachers.evil.{key}"):
        check_config(config, read_data=False)


@pytest.mark.parametrize("pair_style", ["lcbop\nshell touch pwned", "lcbop\n  shell touch pwned",
                                        "lcbop\ninclude pwned.in"])
def test_the_library_refuses_a_command_where_strings_reach_lammps(tmp_path, monkeypatch,
                                                                    pair_style):
    """Defence in depth: a Teacher built without the config check still cannot run `shell`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pwned.in").write_text("shell touch pwned\n")
    teacher = Teacher(name="evil", pair_style=pair_style, elements=["C"],
                      pair_coeff="* * {potentials}/C.lcbop {elements}")
    with pytest.raises(ValueError, match="teacher 'evil' pair_style"):
        single_point(bulk("C", "diamond", a=3.57, cubic=True), teacher)
    assert not (tmp_path / "pwned").exists()


def test_a_trusted_teacher_passes_its_strings_as_written(tmp_path, monkeypatch):
    """`trusted: true` is the documented opt-in to raw LAMMPS (trusted code): a second
    pair_coeff line (and here a shell command) reaches LAMMPS."""
    monkeypatch.chdir(tmp_path)
    spec = {"pair_style": "lcbop", "trusted": True, "elements": ["C"],
            "pair_coeff": "* * {potentials}/C.lcbop {elements}\nshell touch trusted-ran"}
    energy, _ = single_point(bulk("C", "diamond", a=3.57, cubic=True),
                             get_teacher("raw", {"raw": spec}))
    assert np.isfinite(energy) and (tmp_path / "trusted-ran").exists()


def test_a_quoted_path_with_spaces_is_still_one_word():
    teacher = get_teacher("sp", {"sp": {"pair_style": "lcbop", "elements": ["C"],
                                        "pair_coeff": '* * "/data/my pots/C.lcbop" {elements}'}})
    assert teacher.commands(["C"])[1] == 'pair_coeff * * "/data/my pots/C.lcbop" C'


# --- 4. late failures become early, named ones ----------------------------------------------

@pytest.mark.parametrize("override, where", [
    ({"synthetic": {"val_fraction": 0}}, "['synthetic']['val_fraction']"),
    ({"synthetic": {"n_atoms": 1}}, "['synthetic']['n_atoms']"),
    ({"synthetic": {"labellers": ["snap_c", "lcbop+x"]}}, "['synthetic']['labellers'][1]"),
])
def test_a_late_failure_is_refused_before_any_job_naming_the_field(tmp_path, override, where):
    proc = dry_run(tmp_path, {"real": {"source": str(DEMO)}, **override})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and where in text, text[-2000:]


def test_exclude_config_types_dropping_everything_names_the_field():
    types = sorted({str(a.info["config_type"]) for a in read_frames(DEMO)})
    with pytest.raises(ValueError, match="config field 'real.exclude_config_types'"):
        read_real([str(DEMO)], ["C"], exclude_config_types=types)


def test_overlapping_atoms_in_real_data_stop_naming_file_and_structure(tmp_path):
    frames = read_frames(DEMO)[:5]
    frames[3].positions[1] = frames[3].positions[0] + [0.1, 0.0, 0.0]
    path = tmp_path / "overlap.extxyz"
    write_frames(path, frames)
    schema_default = complete(MINIMAL)["real"]["min_distance"]
    assert schema_default == 0.5
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, structure 3: two atoms "
                                         r"0\.100 Angstrom apart.*'real.min_distance'"):
        read_real([str(path)], ["C"], min_distance=schema_default)
    read_real([str(path)], ["C"], min_distance=0.05)  # a user may lower it


def test_a_random_file_given_as_a_model_is_named(tmp_path):
    from synthpre.modelfile import load_model

    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: not a .*synthpre model"):
        load_model(path)


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs: a real full file system (needs root; skipped otherwise)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)  # lazy: a test that failed may hold a file


def test_a_full_disk_names_the_path_and_the_cause(full_disk):
    import torch

    from synthpre.atomic import atomic_path, write_json

    target = full_disk / "model.pt"
    with pytest.raises(OSError, match=f"no space left on device writing {re.escape(str(target))}"):
        with atomic_path(target) as tmp:
            torch.save({"w": torch.zeros(200_000)}, tmp)  # torch says only 'iostream error'
    with pytest.raises(OSError, match="no space left on device writing .*metrics.json"):
        write_json(full_disk / "metrics.json", list(range(100_000)))
    assert os.listdir(full_disk) == []  # nothing half-written left behind


# --- 5. code version ------------------------------------------------------------------------

def test_results_of_another_code_version_are_listed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/metrics.json").write_text(json.dumps({"code_version": code_version()}))
    (tmp_path / "b").mkdir()
    old = {"synthpre": "0.0.1", "git_commit": "0123456789abcdef"}
    (tmp_path / "b/stability.json").write_text(json.dumps({"code_version": old}))
    (tmp_path / "b/manifest.json").write_text(json.dumps({"shards": []}))  # before versions
    found = dict(other_versions(tmp_path))
    assert set(found) == {str(tmp_path / "b/stability.json"), str(tmp_path / "b/manifest.json")}
    assert "synthpre 0.0.1, commit 0123456789ab" in found[str(tmp_path / "b/stability.json")]
    assert code_version()["git_commit"] is None or re.fullmatch(
        r"[0-9a-f]{40}(-dirty)?", code_version()["git_commit"])


# --- 6. the Snakefile's parse-time imports come from its own src/ ---------------------------

def test_parse_time_checks_use_the_workflows_own_src(tmp_path):
    """A second checkout run with another checkout's Python: its own config checks run."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for part in ("Snakefile", "config.yaml", "configs", "workflow", "src", "data"):
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, copy / part)
    check = copy / "src/synthpre/config_check.py"
    check.write_text(check.read_text().replace(
        '    check_names(config)\n',
        '    check_names(config)\n    raise ConfigError("marker: the checkout\'s own code")\n', 1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(copy / "Snakefile"),
                           "--directory", str(copy), "-n", "--configfile", str(copy / "config.yaml"),
                           str(copy / "configs/tiny.yaml")],
                          capture_output=True, text=True, timeout=300, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "marker: the checkout's own code" in text, text[-2000:]


# --- 2. the files a teacher reads -----------------------------------------------------------

def test_a_teachers_own_files_are_inputs_and_the_wheels_only_contents(tmp_path, monkeypatch):
    from synthpre.input_files import content_sha256, teacher_digests, teacher_inputs

    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(potentials_dir()) / "C.lcbop", "C.lcbop")
    (tmp_path / "model.pt").write_bytes(b"weights")
    custom = {"own": {"pair_style": "lcbop", "pair_coeff": "* * C.lcbop {elements}",
                      "elements": ["C"]},
              "net": {"kind": "ase", "model_path": "model.pt", "elements": ["C"]}}
    assert teacher_inputs("own", custom) == ["C.lcbop"]
    assert teacher_inputs("net", custom) == ["model.pt"]
    assert teacher_inputs("snap_c", custom) == []  # the wheel's files: software, not inputs
    wheel = json.loads(teacher_digests("lcbop", custom))
    assert wheel == {"{potentials}/C.lcbop": content_sha256(str(Path(potentials_dir()) /
                                                                 "C.lcbop"))}
    before = teacher_digests("net", custom)
    st = (tmp_path / "model.pt").stat()
    (tmp_path / "model.pt").write_bytes(b"weightz")  # same size, old time: content decides
    os.utime(tmp_path / "model.pt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert teacher_digests("net", custom) != before


# --- 2, 3, 5 on a finished tiny run ---------------------------------------------------------

@pytest.fixture(scope="module")
def finished_copy(tiny_run, tmp_path_factory):
    """A private copy of the finished tiny run (metadata and times kept)."""
    workdir = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


def _same_time_other_content(path: Path, edit) -> None:
    """What `cp -p` or `rsync -a` of an edited file does: new content, the old time."""
    st = path.stat()
    path.write_text(edit(path.read_text()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow
def test_an_own_potential_file_reruns_its_labels_by_content_not_time(finished_copy):
    """A labeller's own potential file is an input: a touch alone reruns nothing; an edit
    that keeps the old time reruns that labeller's labels and nothing of the others."""
    work = finished_copy
    shutil.copy(Path(potentials_dir()) / "C.lcbop", work / "C.lcbop")
    override = yaml.safe_load((work / "override.yaml").read_text())
    override["teachers"] = {"lcbop": {"pair_style": "lcbop", "pair_coeff": "* * C.lcbop {elements}",
                                      "elements": ["C"]}}
    (work / "override.yaml").write_text(yaml.safe_dump(override))
    labels = sorted(str(p.relative_to(work)) for p in (work / "results/tiny/labels").rglob("*.extxyz"))
    md = sorted(str(p.relative_to(work)) for p in (work / "results/tiny/md").rglob("frames.extxyz"))
    assert len(labels) == 4 and len(md) == 2
    snakemake(work, "--cores", "2", targets=tuple(labels))  # the lcbop labels, now from ./C.lcbop
    os.utime(work / "C.lcbop")  # touch
    # nothing to do: also after the run itself (a touch can add reasons to rerun, not remove them)
    assert job_counts(dry_run(work, override, *labels, *md)) == {}
    _same_time_other_content(work / "C.lcbop", lambda text: text.replace("0.", "0.0", 1))
    assert job_counts(dry_run(work, override, *labels, *md)) == {"label": 2}


@pytest.mark.slow
def test_real_data_rerun_by_content_not_time(finished_copy):
    work = finished_copy
    override = yaml.safe_load((work / "override.yaml").read_text())
    real, target = Path(override["real"]["source"]), "results/tiny/real/summary.json"
    os.utime(real)  # a touch reruns nothing (nor was anything to do before it)
    assert job_counts(dry_run(work, override, target)) == {}
    # the real data file is the shared tiny run's (override.yaml names it by its absolute
    # path): put its content and time back for the tests that run after this one
    original, st = real.read_bytes(), real.stat()
    try:
        frames = read_frames(real)
        frames[0].info["energy"] = frames[0].info.get("energy", 0.0) + 1e-3
        write_frames(real, frames)
        os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert job_counts(dry_run(work, override, target)) == {"real_data": 1}
    finally:
        real.write_bytes(original)
        os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 200] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["shards/lcbop/val-00000.h5", "real/val.h5"])
def test_a_flipped_byte_in_a_shard_fails_evaluation_naming_it(finished_copy, tmp_path, damaged):
    run = tmp_path / "tiny"
    for part in ("shards/lcbop", "real", "finetune/lcbop/n3/s1", "pretrain/lcbop"):
        shutil.copytree(finished_copy / "results/tiny" / part, run / part)
    _flip_byte(run / damaged)
    out = run / "finetune/lcbop/n3/s1/metrics-again.json"
    proc = subprocess.run(
        [SYNTHPRE, "evaluate", "--model", str(run / "finetune/lcbop/n3/s1/model.pt"),
         "--test", str(run / "real/test.h5"), "--val", str(run / "real/val.h5"),
         "--point", "finetune/lcbop/n3/s1", "--init", str(run / "pretrain/lcbop/model.pt"),
         "--synthetic-val", str(run / "shards/lcbop/manifest.json"), "--out", str(out),
         "--parity", str(tmp_path / "parity.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{run / damaged}: sha256" in proc.stderr and "differs from" in proc.stderr, \
        proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.slow
def test_a_manifest_without_validation_shards_is_named(finished_copy, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(finished_copy / "results/tiny/shards/lcbop", shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["split"] != "val"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"{re.escape(str(shards / 'manifest.json'))}: no "
                                         "validation structures"):
        synthetic_validation(str(shards / "manifest.json"))


@pytest.mark.slow
def test_outputs_record_their_code_version_and_a_run_lists_other_versions(finished_copy):
    import torch

    run = finished_copy / "results/tiny"
    model = torch.load(run / "pretrain/lcbop/model.pt", weights_only=True)
    assert model["meta"]["code_version"] == code_version()
    for record in ("finetune/lcbop/n3/s1/metrics.json", "shards/lcbop/manifest.json",
                   "pretrain/lcbop/stability.json", "real/summary.json"):
        assert json.loads((run / record).read_text())["code_version"] == code_version(), record
    metrics = run / "scratch/n3/s1/metrics.json"
    saved = metrics.read_text()
    try:
        metrics.write_text(json.dumps({**json.loads(saved),
                                       "code_version": {"synthpre": "0.0.1", "git_commit": None}}))
        override = yaml.safe_load((finished_copy / "override.yaml").read_text())
        proc = dry_run(finished_copy, override, "results/tiny/real/summary.json")
        text = proc.stdout + proc.stderr
        assert "NOTE: 1 result(s)" in text and "results/tiny/scratch/n3/s1/metrics.json" in text
        assert "--forcerun" in text
    finally:
        metrics.write_text(saved)
