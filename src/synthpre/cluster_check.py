"""Check the jobs' SLURM resources against what the cluster has, before anything is submitted.

A request no node can satisfy would otherwise sit in the queue (or be refused by sbatch) only
after the upstream jobs have run. ``sinfo`` tells each partition's nodes and limits.
"""
from __future__ import annotations

import re
import subprocess


def slurm_partitions() -> dict[str, dict]:
    """{partition: {"cpus", "mem_mb", "gres" ({name: count}) per node (largest node),
    "time_min" or None}}."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    parts: dict[str, dict] = {}
    for line in out.splitlines():
        name, cpus, mem, gres, limit = line.split("|")
        node = {"cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+")),
                "gres": gres_counts(gres), "time_min": _minutes(limit)}
        best = parts.setdefault(name.rstrip("*"), node)
        for key in ("cpus", "mem_mb"):
            best[key] = max(best[key], node[key])
        for kind, count in node["gres"].items():
            best["gres"][kind] = max(best["gres"].get(kind, 0), count)
    return parts


def gres_counts(gres: str) -> dict[str, int]:
    """A GRES list as sinfo prints it or a job requests it ("gpu:a100:4(S:0-1),shard:16",
    "shard:1") as {name: count}."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"(?:^|,)([A-Za-z_]+)(?::[^:(,]+)?:(\d+)", gres):
        counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
    return counts


def _minutes(limit: str) -> float | None:
    """SLURM time ("infinite", "1-12:00:00", "30:00", "45") in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    fields = [int(x) for x in clock.split(":")]
    h, m, s = ([0] * (3 - len(fields)) + fields) if len(fields) > 1 else (0, fields[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + s / 60


def check_resources(jobs: list[tuple[str, dict]], partitions: dict[str, dict]) -> list[str]:
    """Problems of (rule, evaluated resources) pairs, one line per rule and resource."""
    problems: dict[tuple[str, str], str] = {}
    default = next(iter(partitions), None)
    for rule, res in jobs:
        name = res.get("slurm_partition") or default
        part = partitions.get(name)
        if part is None:
            problems[(rule, "slurm_partition")] = (
                f"rule {rule}: resource slurm_partition={name!r} is not a partition of this "
                f"cluster (sinfo has {sorted(partitions)})")
            continue
        cpus = int(res.get("cpus_per_task") or res.get("_cores") or 1)
        wants = {"mem_mb": (int(res.get("mem_mb") or 0), part["mem_mb"], "MB of memory"),
                 "cpus_per_task": (cpus, part["cpus"], "CPUs"),
                 "gpu": (int(res.get("gpu") or 0), part["gres"].get("gpu", 0), "GPUs")}
        for key, (want, have, what) in wants.items():
            if want > have:
                problems[(rule, key)] = (f"rule {rule}: resource {key}={want} exceeds the "
                                         f"{have} {what} of partition {name!r}'s nodes")
        # e.g. gres="shard:1" (fine-tunes sharing a GPU): the nodes must offer that GRES
        for kind, want in gres_counts(str(res.get("gres") or "")).items():
            have = part["gres"].get(kind, 0)
            if want > have:
                problems[(rule, "gres")] = (f"rule {rule}: resource gres={res['gres']} exceeds "
                                            f"the {have} '{kind}' GRES of partition {name!r}'s "
                                            f"nodes")
        runtime = res.get("runtime")
        if runtime and part["time_min"] is not None and float(runtime) > part["time_min"]:
            problems[(rule, "runtime")] = (f"rule {rule}: resource runtime={runtime} min exceeds "
                                           f"partition {name!r}'s limit of "
                                           f"{part['time_min']:g} min")
    return list(problems.values())
