"""Transactions that wait for locks without making readers queue behind them.

PostgreSQL grants a table's locks in the order they were asked for: while a session waits
for an ACCESS EXCLUSIVE lock, every later reader of that table waits behind it, however
briefly the lock would then be held. So a lock-polite transaction asks for its locks with
a short ``lock_timeout`` (about a second). When that runs out, the transaction is rolled
back, the readers that queued behind it go ahead at once, and it tries again after a
growing pause (with jitter), until its deadline. A reader that holds the table for an
hour delays the publish, never the other readers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from batchscore import db

log = logging.getLogger(__name__)

ATTEMPT_SECONDS = 1.0  # the longest any reader queues behind one attempt
FIRST_PAUSE, LONGEST_PAUSE = 0.2, 10.0
T = TypeVar("T")


class LocksBusy(RuntimeError):
    """Other sessions held the locks past the deadline; the transaction was rolled back each time."""


@dataclass(frozen=True)
class LockWait:
    """How long a transaction waited for its locks, and who held them at the last try."""

    what: str
    attempts: int
    seconds: float
    holders: tuple[str, ...]

    def __str__(self) -> str:
        held = "; ".join(self.holders) or "sessions that had finished by the next look"
        return f"waited {self.seconds:.1f}s ({self.attempts} attempts) for {self.what}, held by: {held}"


def politely(
    url: str,
    body: Callable[[psycopg.Connection[Any], LockWait | None], T],
    *,
    what: str,
    holders: Callable[[psycopg.Connection[Any]], list[str]],
    deadline_seconds: float,
    enter: Callable[[psycopg.Connection[Any], float], None] | None = None,
    attempt_seconds: float = ATTEMPT_SECONDS,
) -> T:
    """Run ``body`` in one transaction whose lock waits last at most ``attempt_seconds`` each.

    ``enter(conn, seconds_left)`` runs first in each attempt, under no short timeout (for an
    advisory lock, whose waiters queue no reader). ``body`` gets how long the earlier attempts
    waited (None on the first), so it can record it in the same transaction. After the
    deadline, :class:`LocksBusy` names the sessions that held the locks (``holders``).
    """
    began = time.monotonic()
    deadline = began + deadline_seconds
    attempts, pause = 0, FIRST_PAUSE
    seen: tuple[str, ...] = ()
    with db.pg_connect(url) as conn:
        while True:
            attempts += 1
            try:
                with conn.transaction():
                    if enter is not None:
                        enter(conn, max(1.0, deadline - time.monotonic()))
                    conn.execute(
                        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(attempt_seconds * 1000)}ms"))
                    )
                    waited = LockWait(what, attempts, time.monotonic() - began, seen) if attempts > 1 else None
                    return body(conn, waited)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                seen = tuple(holders(conn))
                conn.rollback()  # end the look's own transaction: each attempt is a transaction, not a savepoint
                waited_for = LockWait(what, attempts, time.monotonic() - began, seen)
                if time.monotonic() + pause > deadline:
                    raise LocksBusy(f"gave up after the deadline of {deadline_seconds:.0f}s: {waited_for}") from exc
                log.warning("%s; trying again in %.1fs", waited_for, pause)
                time.sleep(pause * random.uniform(0.75, 1.25))  # noqa: S311 (jitter, not a secret)
                pause = min(pause * 2, LONGEST_PAUSE)


def lock_holders(conn: psycopg.Connection[Any], trees: list[str], parents: list[str]) -> list[str]:
    """Sessions holding a lock on any table of the partition ``trees``, or a writer's lock on ``parents``.

    One line each: pid, application or user, state and how long its transaction has been open.
    """
    rows = conn.execute(
        """
        SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), a.usename::text, '?'), a.state,
               coalesce(extract(epoch FROM now() - a.xact_start)::int, 0)
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
          AND (l.relation IN (SELECT t.relid FROM unnest(%s::text[]) AS r(root),
                                                  pg_partition_tree(r.root::regclass) AS t)
               OR (l.relation = ANY(%s::text[]::regclass[])
                   AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock')))
        ORDER BY 1
        """,
        (trees, parents),
    ).fetchall()
    return [f"pid {pid} ({app}, {state}, transaction open {age}s)" for pid, app, state, age in rows]
