#!/usr/bin/env bash
# Run by Snakemake in the new environment (`--sdm conda`): a `synthpre` command that runs this
# environment's Python on the workflow's src/ (the Snakefile puts it on PYTHONPATH).
set -euo pipefail
printf '#!/bin/sh\nexec "%s" -m synthpre "$@"\n' "$CONDA_PREFIX/bin/python" > "$CONDA_PREFIX/bin/synthpre"
chmod +x "$CONDA_PREFIX/bin/synthpre"
