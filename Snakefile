# synthpre: synthetic pre-training of equivariant interatomic potentials.
# Run: snakemake --profile profiles/local   (or profiles/slurm on a cluster)
import json
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# Parse-time checks (common.smk) import this workflow's own src/, not whichever synthpre the
# Python running Snakemake has installed (jobs get it through PYTHONPATH, below).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

# The carbon demo (config.yaml, found from any directory) only when no --configfile is given:
# a study's config stands alone on the schema's defaults (synthpre/config.py), and one without
# `run` is named after its last file.
if not workflow.overwrite_configfiles:
    configfile: os.path.join(workflow.basedir, "config.yaml")

from synthpre.config import name_run

name_run(config, workflow.overwrite_configfiles)
validate(config, "workflow/schemas/config.schema.yaml")

# Rules call the `synthpre` CLI of the Python that runs Snakemake (a venv need not be active),
# and every job imports this workflow's own src/, also in the per-rule conda environments
# (`--sdm conda`, envs/*.yaml, whose post-deploy scripts add a `synthpre` launcher).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
os.environ["PYTHONPATH"] = os.pathsep.join(
    [os.path.join(workflow.basedir, "src")] + os.environ.get("PYTHONPATH", "").split(os.pathsep))

envvars:
    "PATH",
    "PYTHONPATH",

include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/real.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/stability.smk"

report: "workflow/report/workflow.rst"


rule all:
    input:
        expand(f"{RESULTS}/curves/{{name}}", name=["learning_curve.csv", "learning_curve.png",
               "learning_curve.svg", "synthetic_size.png", "forgetting.png", "parity.png",
               "datasets.csv",
               "wall_times.csv"]),
        expand(f"{RESULTS}/curves/stability.{{ext}}", ext=["csv", "png", "svg"]),
