"""The per-rule conda environments (`--sdm conda` on clusters) say the same as the pins that
scripts/bootstrap installs, and every rule names one that Snakemake will find. No conda channel
is reachable here, so the environments are checked, not built."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
# each environment file and the envs/*.txt whose pins make up its pip part
PIP_SOURCES = {"core.yaml": ["core.txt"], "foundation.yaml": ["core.txt", "foundation.txt"],
               "dft.yaml": ["core.txt"]}


def pins(*names: str) -> list[str]:
    lines = [line.split("#")[0].strip() for name in names
             for line in (ENVS / name).read_text().splitlines()]
    return [line for line in lines if line]


def test_every_env_file_is_listed_and_parses_with_python_and_the_pins():
    assert sorted(p.name for p in ENVS.glob("*.yaml")) == sorted(PIP_SOURCES)
    for name, sources in PIP_SOURCES.items():
        env = yaml.safe_load((ENVS / name).read_text())
        assert env["channels"][0] == "conda-forge", name
        deps = env["dependencies"]
        assert "python =3.11" in deps and "pip" in deps, name
        pip_parts = [d["pip"] for d in deps if isinstance(d, dict)]
        assert len(pip_parts) == 1, name
        assert pip_parts[0] == pins(*sources), f"{name}: pip part differs from {sources}"


def test_dft_post_deploy_builds_gpaw_at_the_pins_of_dft_txt():
    script = (ENVS / "dft.post-deploy.sh").read_text()
    installed = re.search(r"pip install --no-cache-dir (.+)", script).group(1).split()
    assert installed == pins("dft.txt")
    assert "mpi = False" in script and "libraries = ['xc', 'fftw3', 'openblas']" in script


def rules_and_envs() -> list[tuple[str, Path]]:
    """(rule, resolved conda file) for every rule, resolved as Snakemake does: relative to the
    directory of the file that defines the rule."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            env = re.search(r"\n    conda:\n\s+\"([^\"]+)\"", block)
            found.append((name, (smk.parent / env.group(1)).resolve() if env else None))
    return found


def test_every_rule_names_an_existing_environment():
    found = rules_and_envs()
    assert len(found) >= 14
    for rule, env in found:
        assert env is not None, f"rule {rule} has no conda: directive"
        assert env.parent == ENVS and env.name in PIP_SOURCES, (rule, env)
    envs = dict(found)
    assert envs["dft"].name == "dft.yaml"
    assert envs["md"].name == envs["label"].name == "foundation.yaml"  # teachers may be
    assert envs["pretrain"].name == "core.yaml"


@pytest.mark.parametrize("env", ["core", "foundation"])
def test_post_deploy_adds_a_synthpre_command_that_runs_the_environment_python(tmp_path, env):
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to(sys.executable)
    subprocess.run(["bash", str(ENVS / f"{env}.post-deploy.sh")], check=True,
                   env={**os.environ, "CONDA_PREFIX": str(prefix)})
    launcher = prefix / "bin" / "synthpre"
    assert str(prefix / "bin" / "python") in launcher.read_text()
    out = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert "{md,label,teacher-finetune,shard," in out.stdout
