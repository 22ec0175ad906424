"""Submission through Snakemake's SLURM executor to a real SLURM (started by .ci/slurm-up).

Skipped unless `sinfo` exists and a controller answers. The helper
`run_snakemake_on_slurm` is meant to be reused for the tiny pipeline config.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm"

# Executor settings that only make a test faster (the profile's values suit a real cluster).
FAST_ARGS = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]


def _slurm_unavailable_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client tools (sinfo/sbatch) not installed; run .ci/slurm-up as root"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo did not answer ({e}); run .ci/slurm-up as root"
    if r.returncode != 0:
        return f"no SLURM controller answers (sinfo: {r.stderr.strip()[:200]}); run .ci/slurm-up as root"
    parts = {line.split()[0].rstrip("*") for line in r.stdout.splitlines() if line.strip()}
    if not {"cpu", "gpu"} <= parts:
        return f"SLURM lacks partitions cpu and gpu (has {sorted(parts)}); run .ci/slurm-up"
    return None


pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def slurm_cluster():
    """Skip (with the reason) unless a SLURM controller with partitions cpu and gpu answers.

    A fixture rather than a module-level skipif: sinfo takes ~10 s to give up when no
    controller runs, and that should cost nothing when the slurm tests are deselected.
    """
    reason = _slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)


def run_snakemake_on_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: list[str] | tuple[str, ...] = (),
    *,
    targets: tuple[str, ...] = (),
    profile: Path = SLURM_PROFILE,
    fast: bool = True,
    timeout: float = 900,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run Snakemake with `--profile profiles/slurm` in `workdir` (on `targets`, else rule
    all); returns the finished process.

    The process's stdout+stderr (in `.stdout`) hold the plugin's "SLURM jobid" lines;
    `slurm_jobs(proc)` turns them into {jobid: rule}. Successful jobs' SLURM logs are kept
    (`--slurm-keep-successful-logs`) under `workdir/.snakemake/slurm_logs/rule_<name>/`.
    """
    workdir = Path(workdir)
    cmd = [
        sys.executable, "-m", "snakemake", *targets,
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--profile", str(profile),
        "--workflow-profile", "none",
        "--slurm-keep-successful-logs",
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    if fast:
        cmd += FAST_ARGS
    cmd += list(extra_args)
    env = dict(os.environ)
    env.pop("SNAKEMAKE_PROFILE", None)
    # the batch jobs re-run this interpreter's snakemake: keep its bin dir on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
        )
        raise AssertionError(
            f"snakemake on SLURM failed (rc={proc.returncode}):\n{proc.stdout[-8000:]}\n{logs}"
        )
    return proc


def slurm_jobs(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """{SLURM job id: rule name} for the jobs Snakemake submitted (from its log lines)."""
    ids = re.findall(r"SLURM jobid (\d+)", proc.stdout)
    out: dict[str, str] = {}
    for jid in ids:
        info = scontrol_job(jid)
        m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", info.get("Comment", ""))
        out[jid] = m.group(1) if m else info.get("Comment", "?")
    return out


def scontrol_job(jobid: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (jobs stay visible for MinJobAge, 1 h in .ci/slurm-up, after they end)."""
    r = subprocess.run(["scontrol", "show", "job", "-o", str(jobid)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, f"scontrol show job {jobid}: {r.stderr}"
    info: dict[str, str] = {}
    # values may contain spaces only in a few fields we do not need; split on ' Key='
    for tok in re.split(r" (?=[A-Za-z:/]+=)", r.stdout.strip()):
        k, _, v = tok.partition("=")
        info[k.strip()] = v.strip()
    return info


TOY_SNAKEFILE = textwrap.dedent(
    r"""
    localrules: all

    rule all:
        input: "pretrain.txt"

    rule prep:
        output: "prep.txt"
        threads: 1
        shell:
            "echo partition=$SLURM_JOB_PARTITION job=$SLURM_JOB_ID "
            "cpus=$SLURM_CPUS_PER_TASK msg={config[msg]} > {output}"

    rule pretrain:
        input: "prep.txt"
        output: "pretrain.txt"
        shell:
            "echo partition=$SLURM_JOB_PARTITION job=$SLURM_JOB_ID "
            "cpus=$SLURM_CPUS_PER_TASK gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"
    """
)


def test_toy_workflow_goes_through_sbatch_to_right_partitions(tmp_path, slurm_cluster):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(TOY_SNAKEFILE)
    configfile = tmp_path / "config.yaml"
    configfile.write_text("msg: hello\n")

    proc = run_snakemake_on_slurm(tmp_path, snakefile, configfile)

    jobs = slurm_jobs(proc)
    assert sorted(jobs.values()) == ["prep", "pretrain"], (jobs, proc.stdout[-3000:])
    by_rule = {rule: scontrol_job(jid) for jid, rule in jobs.items()}

    prep, pre = by_rule["prep"], by_rule["pretrain"]
    assert prep["JobState"] == "COMPLETED" and pre["JobState"] == "COMPLETED"
    assert prep["Partition"] == "cpu"
    assert pre["Partition"] == "gpu"
    # profile: default mem_mb 2000; pretrain mem_mb 8000, cpus_per_task 2, gpu 1, runtime 720
    assert prep["MinMemoryNode"] == "2000M"
    assert pre["MinMemoryNode"] == "8000M"
    assert pre["NumCPUs"] == "2"
    assert pre["TimeLimit"] == "12:00:00"
    gres = " ".join(pre.get(k, "") for k in ("TresPerJob", "TresPerNode", "TRES"))
    assert "gpu" in gres, pre
    assert "gpu" not in " ".join(prep.get(k, "") for k in ("TresPerJob", "TresPerNode"))

    # inside the jobs, SLURM's view agrees
    assert "partition=cpu" in (tmp_path / "prep.txt").read_text()
    assert "msg=hello" in (tmp_path / "prep.txt").read_text()
    out = (tmp_path / "pretrain.txt").read_text()
    assert "partition=gpu" in out and "gpus=none" not in out, out

    # SLURM logs kept per rule
    logdir = tmp_path / ".snakemake" / "slurm_logs"
    assert list((logdir / "rule_prep").glob("*.log"))
    assert list((logdir / "rule_pretrain").glob("*.log"))


@pytest.mark.slow
def test_tiny_pipeline_through_slurm_profile(tmp_path, slurm_cluster, real_like_file):
    """The real pipeline on configs/tiny.yaml through profiles/slurm: every job via sbatch,
    training rules on the gpu partition with a GPU, the rest on cpu.

    Targets: the learning curve and one model's stability run (with the teacher's reference
    run), so that every rule kind but the last report runs through SLURM; the other models'
    stability runs and their curve are the same rules again, and only lengthen the test."""
    override = tmp_path / "override.yaml"
    override.write_text(f"real: {{source: {real_like_file}}}\n"
                        "synthetic: {labellers: [snap_c]}\n"
                        "pretrain: {sizes: [all]}\n"
                        "finetune: {n_train: [3], seeds: [1], max_epochs: 2}\n")
    proc = run_snakemake_on_slurm(
        tmp_path, REPO / "Snakefile", None,
        ["--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / "tiny.yaml"),
         str(override)], timeout=1500,
        targets=("results/tiny/curves/learning_curve.csv",
                 "results/tiny/pretrain/snap_c/stability.json"))
    jobs = slurm_jobs(proc)
    rules = sorted(jobs.values())
    assert rules.count("md") == 2 and rules.count("label") == 2
    for rule in ("shard", "real_data", "pretrain", "finetune", "scratch", "evaluate",
                 "evaluate_pretrained", "aggregate", "stability_reference", "stability"):
        assert rule in rules, rules
    for jid, rule in jobs.items():
        info = scontrol_job(jid)
        assert info["JobState"] == "COMPLETED", (rule, info)
        gres = " ".join(info.get(k, "") for k in ("TresPerJob", "TresPerNode"))
        if rule in ("pretrain", "finetune", "scratch"):
            assert info["Partition"] == "gpu" and "gpu" in gres, (rule, info)
        else:
            assert info["Partition"] == "cpu" and "gpu" not in gres, (rule, info)
        if rule == "md":
            assert info["NumTasks"] == "2", info
    table = (tmp_path / "results/tiny/curves/learning_curve.csv").read_text().splitlines()
    assert table[0].startswith("mode,labeller,n_pretrain,n,")
    assert sorted(row.split(",")[:2] + row.split(",")[3:4] for row in table[1:]) == \
        [["finetune", "snap_c", "3"], ["pretrained", "snap_c", "0"], ["scratch", "none", "3"]]


@pytest.mark.slow
def test_training_killed_by_time_limit_resumes_from_checkpoint(tmp_path, slurm_cluster,
                                                                real_like_file):
    """A training job that outlives its SLURM time limit checkpoints on SIGTERM, mid-epoch;
    running the same command again (what Snakemake's retry does) continues from there."""
    import json
    import signal
    import time

    import torch

    from synthpre.real_data import ingest

    ingest(str(real_like_file), str(tmp_path / "real"), ["C"])
    from defaults import run_options, train_settings

    settings = train_settings("scratch", model={"num_layers": 1, "num_features": 4,
                                                "num_basis": 4},
                              train={"max_epochs": 100000, "patience": 100000, "batch_size": 2})
    command = [str(Path(sys.executable).parent / "synthpre"), "train", "--settings",
               json.dumps(settings), "--run-options", run_options(), "--stage", "scratch", "--real-dir", str(tmp_path / "real"),
               "--n", "6", "--seed", "1", "--out", str(tmp_path / "out" / "model.pt")]
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nexec " + " ".join(f"'{c}'" for c in command) + "\n")
    script.chmod(0o755)
    submitted = subprocess.run(["sbatch", "--parsable", "--time=1", "-p", "cpu",
                                "-o", str(tmp_path / "slurm.out"), str(script)],
                               capture_output=True, text=True, check=True)
    jobid = submitted.stdout.strip().split(";")[0]
    deadline = time.time() + 300
    while scontrol_job(jobid)["JobState"] in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.time() < deadline, "the job outlived its time limit by minutes"
        time.sleep(5)
    assert scontrol_job(jobid)["JobState"] == "TIMEOUT"
    assert "preempted, resumable: stopped in epoch" in (tmp_path / "slurm.out").read_text()
    ckpt = tmp_path / "out" / "train" / "checkpoint.pt"
    before = torch.load(ckpt, weights_only=True)["state"]
    assert before["epoch"] >= 1 and not (tmp_path / "out" / "model.pt").exists()

    # The retry (the same command) resumes; stop it like the next time limit would.
    retry = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(15)
    retry.send_signal(signal.SIGTERM)
    output = retry.communicate(timeout=120)[0]
    assert retry.returncode == 75, output
    assert "resuming from" in output and "starting fresh" not in output
    after = torch.load(ckpt, weights_only=True)["state"]
    assert after["epoch"] > before["epoch"]
    assert after["history"][:before["epoch"]] == before["history"]  # continued, not restarted
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.parametrize("override, message", [
    (["--set-resources", "pretrain:slurm_partition=gpu", "pretrain:mem_mb=64000"],
     "rule pretrain: resource mem_mb=64000 exceeds the 8000 MB of memory of partition 'gpu'"),
    (["--set-resources", "pretrain:slurm_partition=gpu", "pretrain:gpu=4"],
     "rule pretrain: resource gpu=4 exceeds the 1 GPUs of partition 'gpu'"),
    (["--default-resources", "slurm_partition=bigmem", "mem_mb=1000"],
     "resource slurm_partition='bigmem' is not a partition of this cluster"),
    (["--set-resources", "scratch:slurm_partition=gpu", "scratch:gres=shard:16"],
     "rule scratch: resource gres=shard:16 exceeds the 4 'shard' GRES of partition 'gpu'"),
])
def test_unsatisfiable_profile_resource_is_named_before_submission(tmp_path, slurm_cluster,
                                                                    real_like_file, override,
                                                                    message):
    (tmp_path / "override.yaml").write_text(f"real: {{source: {real_like_file}}}\n")
    proc = run_snakemake_on_slurm(
        tmp_path, REPO / "Snakefile", None,
        ["--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / "tiny.yaml"),
         str(tmp_path / "override.yaml"), *override], check=False, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert "SLURM jobid" not in proc.stdout  # nothing was submitted


SHARED_GPU_SNAKEFILE = textwrap.dedent(
    r"""
    localrules: all

    rule all:
        input: expand("finetune/{i}.txt", i=range(2)), "scratch.txt"

    rule finetune:
        output: "finetune/{i}.txt"
        shell:
            "echo $(date +%s.%N) $SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}} > {output}.tmp; "
            "sleep 15; echo $(date +%s.%N) >> {output}.tmp; mv {output}.tmp {output}"

    use rule finetune as scratch with:
        output: "scratch.txt"
    """
)


def test_fine_tunes_share_one_gpu_with_the_shared_gpu_profile(tmp_path, slurm_cluster):
    """profiles/slurm-shared-gpu after profiles/slurm: each fine-tuning job is its own SLURM
    job asking for one GPU shard, and SLURM runs two of them at once on the node's one GPU
    (both see it as device 0); every other rule keeps profiles/slurm's resources."""
    import yaml

    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(SHARED_GPU_SNAKEFILE)
    proc = run_snakemake_on_slurm(tmp_path, snakefile, None,
                                  ["--profile", str(REPO / "profiles" / "slurm-shared-gpu")])
    jobs = slurm_jobs(proc)
    assert sorted(jobs.values()) == ["finetune", "finetune", "scratch"], jobs
    for jid in jobs:
        info = scontrol_job(jid)
        assert info["JobState"] == "COMPLETED" and info["Partition"] == "gpu", info
        assert "shard:1" in info.get("TresPerNode", "") + info.get("TresPerJob", ""), info
        assert "gres:gpu" not in info.get("TresPerNode", "") + info.get("TresPerJob", ""), info
    runs = []
    for out in [*(tmp_path / "finetune").glob("*.txt"), tmp_path / "scratch.txt"]:
        (start, job, device), (end,) = (line.split() for line in out.read_text().splitlines())
        assert device == "0", out.read_text()  # the node's one GPU, shared
        runs.append((float(start), float(end), job))
    assert len({job for *_, job in runs}) == 3  # three SLURM jobs
    runs.sort()
    overlaps = [a_end > b_start for (_, a_end, _), (b_start, _, _) in zip(runs, runs[1:])]
    assert any(overlaps), runs  # at least two ran at the same time on the one GPU (2 CPUs)
    base = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())["set-resources"]
    shared = yaml.safe_load((REPO / "profiles/slurm-shared-gpu/config.yaml").read_text())[
        "set-resources"]
    fine_tuning = {"finetune", "replay", "frozen", "scratch"}
    assert {k: v for k, v in shared.items() if k not in fine_tuning} == \
        {k: v for k, v in base.items() if k not in fine_tuning}
    assert set(shared) == set(base)


def test_srun_pretraining_across_tasks_matches_one_process(tmp_path, slurm_cluster):
    """What the pretrain rule runs on an allocation of several tasks or nodes: `srun synthpre
    train` starts one rank per task, synthpre joins them from SLURM's environment (gloo here)
    and ends with the weights of a one-process run; the batch step alone stays one process."""
    import time

    import torch
    from conftest import tiny_pretraining_command

    command = tiny_pretraining_command(tmp_path)
    quoted = " ".join(f"'{a}'" for a in command)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nexport OMP_NUM_THREADS=1\n"
                      f"{quoted} --out '{tmp_path}/one/model.pt'\n"         # batch step: 1 rank
                      f"srun {quoted} --out '{tmp_path}/two/model.pt'\n")  # 2 ranks
    script.chmod(0o755)
    submitted = subprocess.run(["sbatch", "--parsable", "-p", "cpu", "--ntasks=2",
                                "--cpus-per-task=1", "-o", str(tmp_path / "slurm.out"),
                                str(script)], capture_output=True, text=True, check=True)
    jobid = submitted.stdout.strip().split(";")[0]
    deadline = time.time() + 300
    while scontrol_job(jobid)["JobState"] in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.time() < deadline, (tmp_path / "slurm.out").read_text()[-3000:]
        time.sleep(3)
    log = (tmp_path / "slurm.out").read_text()
    assert scontrol_job(jobid)["JobState"] == "COMPLETED", log[-3000:]
    assert "[rank 1]" in log and "[rank 0]" in log  # both ranks of the srun step spoke
    one, two = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"]
                for d in ("one", "two"))
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-9, atol=1e-12)
