# Shared names: result paths, the fan-out of MD jobs, and settings passed to the CLI as JSON.
from synthpre.config_check import check_config, md_jobs

check_config(config)

RUN = config["run"]
RESULTS = f"results/{RUN}"
SYN = config["synthetic"]
FT = config["finetune"]
JOBS = md_jobs(SYN)
LABELLERS = SYN["labellers"]


def settings(*sections):
    """JSON of config sections for the CLI, so rules stay one command each."""
    return json.dumps({s: config.get(s, {}) for s in sections})


def curve_points():
    """Every learning-curve point: fine-tuned per labeller, and scratch, for each n and seed."""
    points = [f"scratch/n{n}/s{s}" for n in FT["n_train"] for s in FT["seeds"]]
    points += [f"finetune/{lab}/n{n}/s{s}" for lab in LABELLERS
               for n in FT["n_train"] for s in FT["seeds"]]
    return points
