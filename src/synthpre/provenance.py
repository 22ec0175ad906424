"""Which code made a result: synthpre's version and the workflow's git commit.

A change of synthpre's code reruns nothing by design (Snakemake would otherwise redo a whole
study for a typo in a docstring), but a result may still differ under new code. So every
output's metadata (model files, metrics.json, shard manifests, the real data's summary,
stability.json) records ``code_version``, and ``other_versions`` lists the results of a run
folder that another code version made (the Snakefile prints them when it starts).
"""
from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__

# the repository (or unpacked release) this module belongs to: src/synthpre/ -> ../..
WORKFLOW_ROOT = Path(__file__).resolve().parents[2]
# JSON outputs that carry code_version; a model file's is also in its point's metrics.json
RECORDS = ("metrics.json", "manifest.json", "stability.json", "summary.json")


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{"synthpre": version, "git_commit": commit (+ "-dirty" with uncommitted changes to
    tracked files) or None outside a git checkout}. Computed once per process."""
    return {"synthpre": __version__, "git_commit": _git_commit(WORKFLOW_ROOT)}


def _git_commit(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe(version: dict | None) -> str:
    if not version:
        return "not recorded (made before versions were recorded)"
    commit = version.get("git_commit")
    return f"synthpre {version.get('synthpre')}" + (f", commit {commit[:12]}" if commit else "")


def other_versions(results_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, its code version) of every recorded result under ``results_dir`` made by
    another code version than this one. Reads only the small JSON records."""
    current = code_version()
    found = []
    for root, _, files in os.walk(results_dir):
        for name in files:
            if name not in RECORDS:
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as fh:
                    recorded = json.load(fh).get("code_version")
            except (OSError, ValueError, AttributeError):
                continue
            if recorded != current:
                found.append((path, describe(recorded)))
    return sorted(found)


def report_other_versions(results_dir: str | os.PathLike, limit: int = 5) -> str | None:
    """One paragraph for the start of a run, or None when every result is of this code."""
    found = other_versions(results_dir)
    if not found:
        return None
    lines = [f"  {path}: {version}" for path, version in found[:limit]]
    more = f"\n  ... and {len(found) - limit} more" if len(found) > limit else ""
    return (f"NOTE: {len(found)} result(s) under {results_dir} were made by another code "
            f"version than this one ({describe(code_version())}); code changes rerun nothing "
            f"by design. To redo a stage: snakemake --forcerun <rule> (README, 'What reruns "
            f"when you change what').\n" + "\n".join(lines) + more)
