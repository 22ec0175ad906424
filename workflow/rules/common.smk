# Shared names: result paths, the fan-out of MD jobs, and settings passed to the CLI as JSON.
from synthpre import job_settings
from synthpre.config_check import ConfigError, check_config, md_jobs

MACHINE_PROBLEMS = check_config(config, read_data=workflow.is_main_process)
if workflow.is_main_process:
    for problem in MACHINE_PROBLEMS:
        print(f"WARNING (a dry run goes on; a real run stops here): {problem}", file=sys.stderr)


onstart:
    if MACHINE_PROBLEMS:
        raise ConfigError("\n".join(MACHINE_PROBLEMS))
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        from synthpre.cluster_check import check_resources, slurm_partitions

        jobs = [(job.rule.name, dict(job.resources.items())) for job in workflow.dag.needrun_jobs()]
        too_big = check_resources(jobs, slurm_partitions())
        if too_big:
            raise ConfigError("profile resources this SLURM cannot satisfy:\n" + "\n".join(too_big))

RUN = config["run"]
RESULTS = f"results/{RUN}"
SYN = config["synthetic"]
FT = config["finetune"]
JOBS = md_jobs(SYN)
LABELLERS = SYN["labellers"]


def settings(stage, *args):
    """JSON of exactly the fields a rule's job reads (synthpre.job_settings), so a job reruns
    when, and only when, one of its own settings changes."""
    return job_settings.as_json(getattr(job_settings, stage)(config, *args))


def pretrained_families():
    """The pre-trained models: per labeller, `<labeller>` on all synthetic structures and
    `<labeller>/k<size>` for each other size of the sweep (pretrain.sizes)."""
    return [lab if size == "all" else f"{lab}/k{size}"
            for lab in LABELLERS for size in config["pretrain"]["sizes"]]


def curve_points():
    """Every learning-curve point: each pre-trained model fine-tuned in each mode of
    finetune.modes (finetune, replay, frozen), and scratch, for each n and seed."""
    points = [f"scratch/n{n}/s{s}" for n in FT["n_train"] for s in FT["seeds"]]
    points += [f"{mode}/{pre}/n{n}/s{s}" for mode in FT["modes"]
               for pre in pretrained_families() for n in FT["n_train"] for s in FT["seeds"]]
    return points
