"""Stopping a slice task mid-load, deterministically, inside PostgreSQL.

An event trigger arms every slice table a pipeline creates with a row trigger that, at its
200th row, waits on an advisory lock the test holds. Each slice task's COPY then stops
mid-load with rows already sent, where the test can find it (``pg_stat_activity``) and
kill its process, or its whole worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import psycopg

HOLD_KEY = 4242
DISARM_HOLD = "DROP EVENT TRIGGER IF EXISTS test_arm_hold"


def arm_hold(table: str) -> str:
    """SQL arming each new slice table of ``schema.table`` (``<table>_l<id>``, not its ``_rej`` table)."""
    schema, name = table.split(".")
    return f"""
CREATE OR REPLACE FUNCTION public.test_hold_load() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE seen int := coalesce(nullif(current_setting('test.hold_rows', true), ''), '0')::int + 1;
BEGIN
    PERFORM set_config('test.hold_rows', seen::text, false);
    IF seen = 200 THEN
        PERFORM pg_advisory_xact_lock({HOLD_KEY});
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION public.test_arm_hold() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
    FOR created IN SELECT object_identity FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
        IF created.object_identity ~ '^{schema}\\.{name}_l[0-9]+$' THEN
            EXECUTE format(
                'CREATE TRIGGER test_hold BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION public.test_hold_load()',
                created.object_identity
            );
        END IF;
    END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS test_arm_hold;
CREATE EVENT TRIGGER test_arm_hold ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION public.test_arm_hold();
"""


def loading_backends(scores_url: str, table: str, count: int, timeout: float = 300) -> list[int]:
    """The client ports of ``count`` slice tasks' COPYs once each waits mid-load on the test's advisory lock."""
    name = table.split(".")[1]
    deadline = time.monotonic() + timeout
    with psycopg.connect(scores_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT client_port FROM pg_stat_activity WHERE wait_event = 'advisory' AND query ILIKE %s",
                (f"%COPY%{name}_l%",),
            ).fetchall()
            if len(rows) >= count:
                return [int(row[0]) for row in rows]
            time.sleep(0.2)
    raise TimeoutError(f"fewer than {count} slice tasks reached the held row of their load")


def loading_backend(scores_url: str, table: str, timeout: float = 300) -> int:
    """The client port of a slice task's COPY once it waits mid-load on the test's advisory lock."""
    return loading_backends(scores_url, table, 1, timeout)[0]


def process_with_local_port(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise LookupError(f"no process holds a TCP connection from port {port}")


@contextmanager
def held_mid_load(scores_url: str, table: str) -> Iterator[None]:
    """Within: every new slice load of ``table`` stops at its 200th row. On exit: disarmed and released."""
    with psycopg.connect(scores_url, autocommit=True) as admin:
        admin.execute(arm_hold(table))
        with psycopg.connect(scores_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
            try:
                yield
            finally:
                admin.execute(DISARM_HOLD)
                holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))


def arm_failure(table: str, key: str, value: int) -> str:
    """SQL making every new slice table of ``schema.table`` refuse the row whose ``key`` is ``value``.

    A slice holding that key fails its load on every try (an error no retry fixes, raised inside
    PostgreSQL mid-COPY); the other slices load as usual.
    """
    schema, name = table.split(".")
    return f"""
CREATE OR REPLACE FUNCTION public.test_fail_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.{key} = {int(value)} THEN
        RAISE EXCEPTION 'test: the load of this slice fails at key %', NEW.{key};
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION public.test_arm_failure() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
    FOR created IN SELECT object_identity FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
        IF created.object_identity ~ '^{schema}\\.{name}_l[0-9]+$' THEN
            EXECUTE format(
                'CREATE TRIGGER test_fail BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION public.test_fail_load()',
                created.object_identity
            );
        END IF;
    END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS test_arm_failure;
CREATE EVENT TRIGGER test_arm_failure ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION public.test_arm_failure();
"""


@contextmanager
def failing_load(scores_url: str, table: str, key: str, value: int) -> Iterator[None]:
    """Within: every new slice table of ``table`` refuses the row with ``key = value``. On exit: disarmed."""
    with psycopg.connect(scores_url, autocommit=True) as admin:
        admin.execute(arm_failure(table, key, value))
        try:
            yield
        finally:
            admin.execute("DROP EVENT TRIGGER IF EXISTS test_arm_failure")
