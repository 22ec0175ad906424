"""Stopping a training job cleanly before a scheduler kills it.

SLURM sends SIGTERM at the time limit (and, when asked with ``--signal=USR1@<seconds>``,
SIGUSR1 that long before). The handler only sets a flag; the trainer checks it after every
batch, writes a checkpoint and raises ``Preempted``, so the retried job resumes at that batch.
Kept free of torch so the CLI can catch ``Preempted`` without importing it.
"""
from __future__ import annotations

import threading

STOP_REQUESTED = threading.Event()


class Preempted(Exception):
    """Training stopped on request after writing a checkpoint; rerunning resumes it."""


def request_stop(signum=None, frame=None) -> None:
    STOP_REQUESTED.set()
