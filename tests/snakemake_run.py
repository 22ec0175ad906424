"""Running the pipeline's Snakefile on the tiny config in a scratch folder (tests only)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args: str, targets: tuple[str, ...] = (),
              check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, *targets, "--directory", str(workdir), *args, "--configfile",
           str(REPO / "configs" / "tiny.yaml"), str(workdir / "override.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def write_override(workdir: Path, real_path: Path | str, **extra) -> None:
    override = {"real": {"source": str(real_path)}, **extra}
    (workdir / "override.yaml").write_text(yaml.safe_dump(override))


def planned_jobs(workdir: Path, **extra) -> dict[str, int]:
    """Jobs per rule that ``snakemake -n`` would run with ``extra`` merged into the override."""
    override = yaml.safe_load((workdir / "override.yaml").read_text())
    plan = workdir / "plan.yaml"
    plan.write_text(yaml.safe_dump({**override, **extra}))
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "-n", "--quiet", "rules", "--configfile",
         str(REPO / "configs" / "tiny.yaml"), str(plan)],
        capture_output=True, text=True, timeout=600)
    return job_counts(proc)


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule in the output of ``snakemake -n --quiet rules`` (which must succeed)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and words[0] not in ("total", "all"):
            counts[words[0]] = int(words[1])
    return counts
