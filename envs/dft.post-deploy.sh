#!/usr/bin/env bash
# Run by Snakemake in the new environment (`--sdm conda`): GPAW at the pins of envs/dft.txt,
# built serial against the environment's libxc, FFTW and OpenBLAS (a siteconfig, as
# scripts/bootstrap does: the mpich wheel's compiler wrappers would otherwise switch MPI on),
# then the `synthpre` command as in envs/core.post-deploy.sh.
set -euo pipefail
siteconfig=$(mktemp --suffix=.py)
cat > "$siteconfig" <<PY
mpi = False
compiler = 'g++'
fftw = True
libraries = ['xc', 'fftw3', 'openblas']
include_dirs = ['$CONDA_PREFIX/include']
library_dirs = ['$CONDA_PREFIX/lib']
runtime_library_dirs = ['$CONDA_PREFIX/lib']
PY
GPAW_CONFIG="$siteconfig" python -m pip install --no-cache-dir gpaw==26.7.0 gpaw-data==1.2.1
rm -f "$siteconfig"
printf '#!/bin/sh\nexec "%s" -m synthpre "$@"\n' "$CONDA_PREFIX/bin/python" > "$CONDA_PREFIX/bin/synthpre"
chmod +x "$CONDA_PREFIX/bin/synthpre"
