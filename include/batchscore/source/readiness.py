"""Has a window's upstream data landed? The pipeline's ``source.ready_when`` check, run against the source.

The check is the user's SQL with the window's bounds as bound parameters (``:window_start``,
``:window_end``), never formatted into the text. Its first column of its first row decides:
true means ready; false, NULL or no row means not yet. It runs on the triggerer, polled, while
the run waits without holding a worker slot (batchscore.airflow.readiness).
"""

from __future__ import annotations

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.pipeline.windows import Window


class UpstreamNotLanded(PermanentError, TimeoutError):
    """The window's upstream data did not land before ``source.ready_timeout_minutes``: nothing was read."""

    alert_event = "upstream_timeout"
    remedy = (
        "check the upstream load for this window; once it has landed, clear the run's wait_for_upstream task "
        "(or raise source.ready_timeout_minutes if it lands this late as a rule)"
    )


def check_ready(source_url: str, ready_when: str, window: Window) -> bool:
    """Run ``ready_when`` once over ``window``; True when its first value is true.

    Any SQLAlchemy URL works (the PostgreSQL URL the engine uses is mapped to SQLAlchemy's psycopg
    driver). One short-lived connection per call: a poll every minute needs no pool.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(db.sqlalchemy_url(source_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            params = {
                k: v for k, v in (("window_start", window.start), ("window_end", window.end)) if f":{k}" in ready_when
            }
            row = conn.execute(sa.text(ready_when), params).first()
    finally:
        engine.dispose()
    return bool(row is not None and row[0])


def not_landed(window: Window, minutes: int) -> UpstreamNotLanded:
    """The error of a run whose window never became ready (the run record's cause, word for word)."""
    return UpstreamNotLanded(f"upstream not landed for {window} after {minutes} min")
