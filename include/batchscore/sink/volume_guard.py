"""The volume guard: a window is never replaced by far fewer rows than it holds, nor published empty.

Judged in publish, inside its transaction and under the window's lock, on the rows about
to be published (scored, duplicates out), before the swap. Three floors, each from the
pipeline's ``validation``:

- ``min_rows`` for every window (default 1: an empty upstream never publishes an empty window);
- a window that holds scores now: ``min_replace_fraction`` of the rows it holds (default 0.9,
  so a source that lost 40 % of the window's rows is held, a 2 % change is published);
- a new window: ``min_rows_fraction`` of the median rows of the pipeline's last
  ``history_windows`` published windows, per second of window (a 12-hour window is judged
  against half a day). A pipeline's first window has no history: ``min_rows`` only.

A held run publishes nothing and fails once (:class:`VolumeGuardHeld` is permanent); its
record keeps the counts and the verdict. ``allow_shrink`` (the trigger form's field) lets
one run publish below the floors; the verdict is recorded as allowed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg

from batchscore.errors import PermanentError
from batchscore.pipeline.run_config import ValidationConfig
from batchscore.pipeline.windows import Window
from batchscore.sink.published_windows import holds_window


class VolumeGuardHeld(PermanentError, RuntimeError):
    """The window's new rows are below the volume guard: nothing was published, the old scores stay."""

    alert_event = "guard"

    remedy = (
        "check the window's source rows (an upstream load not landed yet, a purge, a changed query); re-run when "
        "they are there, or trigger the run with allow_shrink: true to publish what it has (validation.min_rows, "
        "min_replace_fraction and min_rows_fraction set the guard)"
    )

    def __init__(self, *args: object, verdict: VolumeVerdict | None = None) -> None:
        super().__init__(*args)
        self.verdict = verdict


@dataclass(frozen=True)
class VolumeGuard:
    """The pipeline's floors for one run, and whether the operator allowed this run to go below them."""

    min_rows: int = 1
    min_replace_fraction: float = 0.9
    min_rows_fraction: float = 0.5
    history_windows: int = 7
    allow_shrink: bool = False

    @classmethod
    def of(cls, validation: ValidationConfig, *, allow_shrink: bool = False) -> VolumeGuard:
        return cls(
            validation.min_rows,
            validation.min_replace_fraction,
            validation.min_rows_fraction,
            validation.history_windows,
            allow_shrink,
        )


@dataclass(frozen=True)
class VolumeVerdict:
    """What the guard found: the run's rows, the floor they were held to and why (the run record's ``volume``)."""

    rows: int
    required: int
    basis: Literal["window", "history", "min_rows"]
    baseline: int | None  # the rows the window holds now, or the history's median scaled to this window
    fraction: float | None
    history: int  # how many published windows the median was taken over
    held: bool
    allowed: bool  # below the floor, published anyway (allow_shrink)

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def cause(self, window: Window | None = None) -> str:
        """The one-line cause for the run record and the task log; with ``window``, as the held run's error."""
        if self.basis == "window":
            why = f"< {self.fraction:.0%} of the {self.baseline:,} the window holds now"
        elif self.basis == "history":
            why = (
                f"< {self.fraction:.0%} of {self.baseline:,}, the median of the pipeline's last {self.history} "
                "published windows (for a window of this length)"
            )
        else:
            why = f"< min_rows {self.required:,}" + (" (the source returned no rows)" if not self.rows else "")
        what = "replace" if self.basis == "window" else "publish"
        held = f"; nothing was published for window {window}" if window is not None else ""
        return f"volume guard: {self.rows:,} rows {why}{held}; pass allow_shrink: true to {what}"


# Per window of the pipeline's table, its latest publish: the rows it holds (lineage rows of
# one publish share its transaction's now()), most recently published first.
_HISTORY = """
    SELECT rows, extract(epoch FROM window_end - window_start) FROM (
        SELECT DISTINCT ON (window_start, window_end) window_start, window_end, published_at, rows FROM (
            SELECT window_start, window_end, published_at, sum(rows_written) AS rows
            FROM scoring.lineage
            WHERE output_table = %(table)s AND published_at IS NOT NULL AND rows_written IS NOT NULL
            GROUP BY window_start, window_end, published_at
        ) AS publishes
        ORDER BY window_start, window_end, published_at DESC
    ) AS latest
    WHERE NOT (window_start = %(start)s AND window_end = %(end)s)
    ORDER BY published_at DESC LIMIT %(limit)s
"""

_HOLDS_NOW = """
    SELECT sum(rows_written) FROM scoring.lineage
    WHERE output_table = %(table)s AND window_start = %(start)s AND window_end = %(end)s
      AND published_at = (SELECT max(published_at) FROM scoring.lineage
                          WHERE output_table = %(table)s AND window_start = %(start)s AND window_end = %(end)s)
"""


def rows_held(conn: psycopg.Connection[Any], output_table: str, window: Window) -> int | None:
    """The rows ``window`` holds now (from its latest publish's lineage), or None when it holds no partition."""
    if not holds_window(conn, output_table, window):
        return None
    params = {"table": output_table, "start": window.start, "end": window.end}
    row = conn.execute(_HOLDS_NOW, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def history_median(conn: psycopg.Connection[Any], output_table: str, window: Window, limit: int) -> tuple[int, int]:
    """(median rows of the last ``limit`` published windows scaled to ``window``'s length, how many windows)."""
    params = {"table": output_table, "start": window.start, "end": window.end, "limit": limit}
    rates = [float(rows) / float(seconds) for rows, seconds in conn.execute(_HISTORY, params) if seconds]
    if not rates:
        return 0, 0
    return round(statistics.median(rates) * window.duration.total_seconds()), len(rates)


def judge(
    conn: psycopg.Connection[Any], guard: VolumeGuard, output_table: str, window: Window, rows: int
) -> VolumeVerdict:
    """The verdict on publishing ``rows`` as ``window``'s scores (read under the window's publish lock)."""
    held_now = rows_held(conn, output_table, window)
    basis: Literal["window", "history", "min_rows"] = "min_rows"
    baseline, fraction, history, required = None, None, 0, guard.min_rows
    if held_now is not None:
        basis, baseline, fraction = "window", held_now, guard.min_replace_fraction
    else:
        median, history = history_median(conn, output_table, window, guard.history_windows)
        if history:
            basis, baseline, fraction = "history", median, guard.min_rows_fraction
    if baseline is not None and fraction is not None and math.ceil(baseline * fraction - 1e-9) > guard.min_rows:
        required = math.ceil(baseline * fraction - 1e-9)
    else:  # no history, or a floor below min_rows: the absolute floor is the one that holds, and names itself
        basis = "min_rows"
    below = rows < required
    return VolumeVerdict(
        rows=rows,
        required=required,
        basis=basis,
        baseline=baseline,
        fraction=fraction,
        history=history,
        held=below and not guard.allow_shrink,
        allowed=below and guard.allow_shrink,
    )
