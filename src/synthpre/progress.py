"""Progress of long jobs: on a cluster a slow job must be told from a hung one.

One log line at most every ``INTERVAL_S`` seconds (and at the end): done/total, rate and ETA,
plus whatever the caller adds. Writes through ``logging`` into the rule's log file. When the
job runs in a terminal (stderr is a TTY: someone typed ``synthpre ...``), a progress bar is
redrawn in place as well; in a rule's log (no TTY) there is no bar, only the lines.
Training can also write its per-epoch scalars for TensorBoard (``train.tensorboard``).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

log = logging.getLogger("synthpre.progress")

INTERVAL_S = 30.0
BAR_INTERVAL_S = 0.2
BAR_WIDTH = 30


class Progress:
    def __init__(self, what: str, total: int, unit: str, enabled: bool = True,
                 stream: TextIO | None = None, lines: bool = True):
        """``lines=False``: the bar only, for a caller that logs its own lines (training)."""
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.lines = lines
        self.interval = INTERVAL_S
        self.start = self.last = self.last_bar = time.perf_counter()
        self.stream = sys.stderr if stream is None else stream
        self.bar = enabled and _is_tty(self.stream)
        self.text = ""

    def update(self, done: int, details: Callable[[], str] | None = None) -> None:
        """Redraw the bar (on a TTY); log a line if ``interval`` has passed since the last
        one, or when done."""
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        finished = done >= self.total
        if self.bar and (finished or now - self.last_bar >= BAR_INTERVAL_S):
            self.last_bar = now
            filled = round(BAR_WIDTH * min(done, self.total) / max(self.total, 1))
            self.text = (f"{self.what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                         f"{done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, "
                         f"ETA {eta:.0f} s")
            self.redraw()
            if finished:
                self.close()
        if self.lines and (finished or now - self.last >= self.interval):
            self.last = now
            extra = f", {details()}" if details else ""
            log.info("%s: %d/%d %s (%.1f %s/s, ETA %.0f s)%s", self.what, done, self.total,
                     self.unit, rate, self.unit, eta, extra)

    def redraw(self) -> None:
        """The bar on the terminal's last line, drawn over itself."""
        if self not in _ON_SCREEN:
            _ON_SCREEN.append(self)
        self.stream.write(f"\r\033[K{self.text}")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (done, or stopped early: patience, a failure)."""
        if self in _ON_SCREEN:
            _ON_SCREEN.remove(self)
            self.stream.write("\n")
            self.stream.flush()
        self.bar = False


_ON_SCREEN: list[Progress] = []  # bars drawn on the terminal and not yet closed


class TerminalLogHandler(logging.StreamHandler):
    """Log lines to stderr that keep a progress bar below them: the bar's line is cleared,
    the record written, the bar drawn again (``synthpre``'s handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        bars = [bar for bar in _ON_SCREEN if bar.stream is self.stream]
        if bars:
            self.stream.write("\r\033[K")
        super().emit(record)
        if bars:
            bars[-1].redraw()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class EpochScalars:
    """Per-epoch training scalars for TensorBoard (``train.tensorboard: true``), the same
    numbers as ``metrics.csv``. A resumed training drops the events after its checkpoint's
    epoch, so a curve never holds an epoch twice."""

    KEYS = ("train_loss", "val_energy_rmse_per_atom", "val_force_rmse", "lr")

    def __init__(self, log_dir: Path, last_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError("config field 'train.tensorboard' is true, but the tensorboard "
                             "package is missing (pinned in envs/core.txt)") from err
        self.writer = SummaryWriter(str(log_dir), purge_step=last_epoch + 1 if last_epoch else None)

    def add(self, row: dict) -> None:
        for key in self.KEYS:
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
