#!/usr/bin/env bash
# The GPU benchmark in one command (issue 19): synthpre's ways of running a training step
# (captured whole step, compiled kernel bodies, eager; the cueq kernel captured and op by op,
# which needs envs/gpu.txt installed) and, where its environment exists,
# NequIP 0.19.1's compile and eager modes, side by side on the same paper-size frames, each in
# its own process; prints structures/s, step time, warm-up (compile) time, peak memory, ops
# and CUDA kernels per step, and the first code's ratios against the others.
#
#   benchmarks/gpu.sh                      # cuda, 2 epochs, within BUDGET_S (480 s) per code
#   DEVICE=cpu CODES="synthpre-eager" EPOCHS=1 benchmarks/gpu.sh   # the CPU path (a smoke run)
#
# Needs nothing from the network: frames are the demo's SNAP labels when present, else
# synthetic 64-atom carbon cells (bench_train.synthetic_frames). NequIP runs from
# NEQUIP_PYTHON (default /tmp/nequip-venv/bin/python; skipped when absent). JSON goes to
# OUT (default bench_gpu.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-2}
BUDGET_S=${BUDGET_S:-480}
NEQUIP_PYTHON=${NEQUIP_PYTHON:-/tmp/nequip-venv/bin/python}
if [[ -z "${CODES+x}" ]]; then  # not given: synthpre's modes, and NequIP's where installed
    CODES="synthpre-capture synthpre synthpre-eager synthpre-cueq-capture synthpre-cueq"
    if [[ -x "$NEQUIP_PYTHON" ]]; then CODES="$CODES nequip-compile nequip-eager"; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086  # CODES is a list of words
exec "$PYTHON" benchmarks/bench_train.py --device "$DEVICE" --epochs "$EPOCHS" \
    --codes $CODES --nequip-python "$NEQUIP_PYTHON" --timeout "$BUDGET_S" \
    --json "${OUT:-bench_gpu.json}" "$@"
