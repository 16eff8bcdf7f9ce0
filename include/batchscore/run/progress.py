"""Progress lines for long stages: rows done, rate and ETA, at a steady cadence in the task log.

A nightly window of millions of rows takes minutes per stage; the operator watching the
task log should see how far it is and when it will end, not silence. Totals may be
estimates (the planner's row estimate for the extract), so they are shown with ``~`` and
the ETA is never negative.
"""

from __future__ import annotations

import logging
import time

DEFAULT_EVERY_SECONDS = 10.0


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts rows for one stage and logs ``rows, %, rows/s, ETA`` at most every ``every`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        stage: str,
        total: int | None = None,
        *,
        estimated: bool = False,
        every: float = DEFAULT_EVERY_SECONDS,
    ) -> None:
        self.logger, self.stage, self.total, self.estimated, self.every = logger, stage, total, estimated, every
        self.rows = 0
        self.started = self._last = time.perf_counter()

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self.logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line as of ``now``: rows done, share of the total, rate and time left."""
        elapsed = max((now or time.perf_counter()) - self.started, 1e-9)
        rate = self.rows / elapsed
        text = f"{self.stage}: {self.rows:,} rows"
        if self.total:
            approx = "~" if self.estimated else ""
            text += f" of {approx}{self.total:,} ({min(self.rows / self.total, 1.0):.0%})"
        text += f", {rate:,.0f} rows/s"
        if self.total and rate > 0:
            text += f", ETA {approx}{_eta((self.total - self.rows) / rate)}"
        return text
