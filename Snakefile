# synthpre: synthetic pre-training of equivariant interatomic potentials.
# Run: snakemake --profile profiles/local   (or profiles/slurm on a cluster)
import json
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: os.path.join(workflow.basedir, "config.yaml")  # found from any directory

validate(config, "workflow/schemas/config.schema.yaml")

# Rules call the `synthpre` CLI of the Python that runs Snakemake (a venv need not be active).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/real.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/stability.smk"

report: "workflow/report/workflow.rst"


rule all:
    input:
        expand(RESULTS + "/curves/{name}", name=["learning_curve.csv", "learning_curve.png",
               "learning_curve.svg", "synthetic_size.png", "forgetting.png", "parity.png",
               "datasets.csv",
               "wall_times.csv"]),
        expand(RESULTS + "/curves/stability.{ext}", ext=["csv", "png", "svg"]),
