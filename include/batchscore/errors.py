"""What kind of failure an error is: one no retry can fix, or one worth retrying.

An error that a retry cannot fix (a bad parameter, config, model reference, checksum,
schema, or too many bad rows) derives from :class:`PermanentError`: the DAG's tasks fail
it at once, without retries, and the run record keeps its one-line cause and the remedy.
Anything else (a dropped connection, a lock timeout, a killed worker) is retried by Airflow.
"""

from __future__ import annotations

import re


class PermanentError(Exception):
    """An error that the same inputs would raise again: retrying only delays the failure."""

    remedy: str = "fix the cause named in the error, then clear the failed task or trigger the run again"
    # Which ``notify:`` event a run failed by this error sends (pipeline/notify.py's Event): a hold
    # (drift_hold, guard) or a readiness timeout (upstream_timeout) says so; anything else is a failure.
    alert_event: str = "failure"

    def __init__(self, *args: object, remedy: str | None = None) -> None:
        super().__init__(*args)
        if remedy:
            self.remedy = remedy


# A database error's lines that quote rows, values or the query rather than say what went wrong:
# PostgreSQL's DETAIL ("Failing row contains (...)", "Key (id)=(42) already exists") and CONTEXT,
# the query line and its caret, and ADBC's "Query was: ..." (which may span lines, up to SQLSTATE).
_DATA_LINE = re.compile(r"^\s*(?:DETAIL:|CONTEXT:|LINE \d+:|\^\s*$)")
_QUERY_WAS = re.compile(r"Query was: .*?(?=SQLSTATE: [0-9A-Z]{5}|\Z)", re.DOTALL)
# PostgreSQL messages whose first line quotes the offending value itself: the value becomes "…".
_VALUE_AFTER = re.compile(
    r'((?:invalid input syntax for type|invalid input value for enum) [^:"]+: '
    r'|date/time field value out of range: )"[^"]*"'
)
_VALUE_BEFORE = re.compile(r'"[^"]*"(?= is out of range for type | for "[^"]*")')  # value "…" is out of range
_ENCODING_BYTES = re.compile(r'(invalid byte sequence for encoding "[^"]+": )0x[0-9a-f]{2}(?: 0x[0-9a-f]{2})*')


def without_data(text: str) -> str:
    """``text`` without the source values a database error quotes (the run record is read more widely than data).

    Run records, alerts and the Scoring view are shown to people who may see runs but not rows,
    so a cause like ``invalid input syntax for type double precision: "4111 1111 1111 1111"``
    keeps its kind and type and loses the value. The task log keeps the whole error.
    """
    text = _QUERY_WAS.sub("", text)
    text = "\n".join(line for line in text.splitlines() if not _DATA_LINE.match(line))
    text = _VALUE_BEFORE.sub('"…"', _VALUE_AFTER.sub(r'\1"…"', text))
    return _ENCODING_BYTES.sub(r"\1…", text)


def one_line(error: BaseException | str, limit: int = 500) -> str:
    """``Type: message`` on one line (its lines joined by "; "), without quoted data, at most ``limit`` characters."""
    if isinstance(error, str):
        text = error
    else:
        message = str(error).strip()
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    line = "; ".join(part.strip() for part in without_data(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def root_cause(error: BaseException) -> BaseException:
    """The permanent error a wrapper (such as Airflow's fail-fast exception) was raised from, else ``error``."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, PermanentError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return error


DISK_FULL_SQLSTATE = "53100"


def out_of_disk(error: BaseException) -> bool:
    """True when ``error`` (or what raised it) is the database running out of disk (psycopg or ADBC alike)."""
    current: BaseException | None = error
    while current is not None:
        if getattr(current, "sqlstate", None) == DISK_FULL_SQLSTATE or "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def remedy_of(error: BaseException) -> str:
    """What an operator should do about ``error`` (or about the permanent error that caused it)."""
    cause = root_cause(error)
    if isinstance(cause, PermanentError):
        return cause.remedy
    if out_of_disk(cause):
        return (
            "the scores database ran out of disk (nothing was published; the failed load was dropped): free space "
            "on its volume (or move the scores tables' tablespace), then clear the failed task"
        )
    return "transient: the task was retried and failed every time; check the task log and the databases, then clear it"
