"""Progress lines for long jobs: on a cluster a slow job must be told from a hung one.

One log line at most every ``INTERVAL_S`` seconds (and at the end): done/total, rate and ETA,
plus whatever the caller adds. Writes through ``logging`` into the rule's log file.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("synthpre.progress")

INTERVAL_S = 30.0


class Progress:
    def __init__(self, what: str, total: int, unit: str, enabled: bool = True):
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.interval = INTERVAL_S
        self.start = self.last = time.perf_counter()

    def update(self, done: int, details: Callable[[], str] | None = None) -> None:
        """Log a line if ``interval`` has passed since the last one, or when done."""
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        extra = f", {details()}" if details else ""
        log.info("%s: %d/%d %s (%.1f %s/s, ETA %.0f s)%s", self.what, done, self.total, self.unit,
                 rate, self.unit, eta, extra)
