"""A failed run's one-line cause names the kind of error and never the source value it met.

Run records, alerts and the Scoring view are read by people who may see runs but not rows, so
the values PostgreSQL quotes in its errors (the bad input of a cast, a DETAIL's "Failing row
contains (...)", ADBC's "Query was: ...") are left out; the task log keeps the whole error.
The errors here are PostgreSQL's own, raised through psycopg and through ADBC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from batchscore import db
from batchscore.errors import one_line
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, run_record

pytestmark = pytest.mark.integration
SECRET = "4111 1111 1111 1111"  # a value in the data, never in the SQL


@pytest.fixture(scope="module")
def source(services: Services) -> Iterator[str]:
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS err_src CASCADE")
        conn.execute("CREATE SCHEMA err_src")
        conn.execute("CREATE TYPE err_src.mood AS ENUM ('calm')")
        conn.execute("CREATE TABLE err_src.rows (v text, big text)")
        conn.execute("INSERT INTO err_src.rows VALUES (%s, %s)", (SECRET, "98765432109"))
        conn.execute("CREATE TABLE err_src.checked (v text CHECK (v = 'calm'))")
        conn.execute("CREATE TABLE err_src.unique_v (v text PRIMARY KEY)")
        conn.execute("INSERT INTO err_src.unique_v SELECT v FROM err_src.rows")
    yield services.warehouse_url
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA err_src CASCADE")


FAILING_SQL = {
    "a cast to a number": ("SELECT v::float8 FROM err_src.rows", 'invalid input syntax for type double precision: "…"'),
    "a cast to a time": ("SELECT v::timestamptz FROM err_src.rows", 'date/time field value out of range: "…"'),
    "an enum": ("SELECT v::err_src.mood FROM err_src.rows", 'invalid input value for enum err_src.mood: "…"'),
    "a number out of range": ("SELECT big::int FROM err_src.rows", 'value "…" is out of range for type integer'),
    "a check constraint": ("INSERT INTO err_src.checked SELECT v FROM err_src.rows", "violates check constraint"),
    "a unique key": ("INSERT INTO err_src.unique_v SELECT v FROM err_src.rows", "violates unique constraint"),
}


def _psycopg_error(url: str, statement: str) -> BaseException:
    with psycopg.connect(url) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return caught.value


def _adbc_error(url: str, statement: str) -> BaseException:
    conn = db.adbc_connect(url)
    try:
        cur = conn.cursor()
        cur.execute(statement)
        cur.fetchall()
    except Exception as exc:  # ADBC's DataError, IntegrityError, ...
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{statement!r} did not fail")


@pytest.mark.parametrize("driver", ["psycopg", "adbc"])
@pytest.mark.parametrize("case", FAILING_SQL, ids=list(FAILING_SQL))
def test_a_database_error_keeps_its_kind_and_loses_the_value(source: str, driver: str, case: str) -> None:
    statement, kind = FAILING_SQL[case]
    error = (_psycopg_error if driver == "psycopg" else _adbc_error)(source, statement)
    assert SECRET in str(error) or "98765432109" in str(error), "PostgreSQL's own error quotes the value"
    line = one_line(error)
    assert kind in line
    assert SECRET not in line
    assert "98765432109" not in line
    assert "Failing row" not in line
    assert "Query was" not in line
    if driver == "adbc":
        assert "SQLSTATE: " in line, "the SQLSTATE after ADBC's query stays"


def test_identifiers_and_our_own_messages_are_kept() -> None:
    assert one_line('column "nope" does not exist\nLINE 1: SELECT nope FROM t\n               ^') == (
        'column "nope" does not exist'
    )
    ours = "ConfigError: pipeline churn: output.table 'x' must be schema.table"
    assert one_line(ours) == ours


def test_a_run_failing_on_a_source_value_records_the_kind_of_error_not_the_value(services: Services) -> None:
    window = Window(*day_window(WAREHOUSE_END - timedelta(days=1)))
    base = churn_config()
    # Every plan value with a secret suffix, cast to a number: PostgreSQL fails on the first row it reads.
    query = f"SELECT * FROM ({base.source.query}) AS original WHERE (plan || ' {SECRET[:4]}')::float8 > 0"
    config = churn_variant("failure_causes", query)
    endpoints = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    with pytest.raises(Exception, match=SECRET[:4]):  # the raised error, for the task log, is whole
        run_pipeline(config, endpoints, window=window, run_id="it__failure_cause")
    record = run_record(services.scores_url, "failure_causes", "it__failure_cause")
    assert record is not None
    assert record["status"] == "failed"
    assert 'invalid input syntax for type double precision: "…"' in record["error"]
    assert SECRET[:4] not in record["error"]
