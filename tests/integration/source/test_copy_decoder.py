"""The COPY decoder on a real PostgreSQL: ADBC's tables exactly, the fallback; failures and closes leave nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pyarrow as pa
import pytest

from batchscore.local.stack import LocalStack
from batchscore.pipeline.windows import Window
from batchscore.source import copy_stream, extract, libpq_copy
from batchscore.source.copy_stream import CopyBatches, SourceReadError, copy_batches
from batchscore.source.slices import KeySlice
from tests.unit.source.test_copy_binary import same_table

pytestmark = pytest.mark.integration
WINDOW = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))  # the queries here use no bounds

EDGES = """
    (1, -32768, -2147483648, -9223372036854775808, '-infinity', '-Infinity', true,
        '4713-11-24 00:00:00 BC', '4713-11-24 00:00:00+00 BC', '4713-01-01 BC', '', '', '    ', 'n'),
    (2, 32767, 2147483647, 9223372036854775807, 'infinity', 'Infinity', false,
        '294276-12-31 23:59:59', 'infinity', '5874897-12-31', 'é€😀', 'ü', 'ab  ', 'ä'),
    (3, 0, 0, 0, 'NaN', '-0', NULL, 'infinity', '-infinity', 'infinity', NULL, NULL, NULL, NULL),
    (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (5, 1, 1, 1, '1.17549435e-38', '4.9e-324', true, '2000-01-01', '1970-01-01 00:00:00+00', '-infinity',
        'line
break', 'x', 'y', 'z')
"""
COLUMNS = "k int4, a int2, b int4, c int8, d float4, e float8, f bool, g timestamp, h timestamptz, i date, " \
    "j text, l varchar(5), m char(4), n name"  # fmt: skip


@pytest.fixture(params=["libpq", "psycopg2"], autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs over both transports: libpq read by compiled code, and psycopg2's copy_expert."""
    monkeypatch.setattr(copy_stream, "LIBPQ_DIRECT", request.param == "libpq")
    return str(request.param)


def test_the_libpq_transport_uses_psycopg2s_own_libpq() -> None:
    lib = libpq_copy.bindings()
    assert lib is not None
    assert "psycopg2_binary.libs" in lib.path


@pytest.fixture(scope="module")
def warehouse(database: LocalStack) -> str:
    """``decoder.kinds``: every supported type at its edges, and 60k ordinary rows after them."""
    url = database.database_url("warehouse")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS decoder")
        conn.execute("DROP TABLE IF EXISTS decoder.kinds")
        conn.execute(f"CREATE TABLE decoder.kinds ({COLUMNS})")
        conn.execute(f"INSERT INTO decoder.kinds VALUES {EDGES}")  # the test's own constants
        conn.execute(
            "INSERT INTO decoder.kinds SELECT g + 10, (g % 30000)::int2, g, g::int8 * 1000003, g / 7.0, "
            "CASE WHEN g % 11 = 0 THEN NULL ELSE sqrt(g) END, g % 2 = 0, "
            "'2026-01-01'::timestamp + g * interval '1 second', '2026-01-01'::timestamptz - g * interval '1 ms', "
            "'2026-01-01'::date + (g % 9000), repeat(chr(200 + g % 300), g % 37), (g % 1000)::text, "
            "(g % 13)::text, 'n' || g FROM generate_series(1, 60000) AS g"
        )
    return url


def adbc_table(url: str, query: str) -> pa.Table:
    schema, batches = extract._adbc_batches(url, query, 1_000_000)
    return pa.Table.from_batches(list(batches), schema)


def decoded_table(url: str, query: str, batch_rows: int) -> tuple[pa.Table, list[int]]:
    decoded = copy_batches(url, query, batch_rows)
    assert decoded is not None
    schema, batches = decoded
    got = list(batches)
    return pa.Table.from_batches(got, schema), [b.num_rows for b in got]


def copy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "copy-out"]


def backends_running(url: str, needle: str) -> list[str]:
    """Queries of other live backends whose text contains ``needle`` (not this check's own)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state <> 'idle' "
            "AND position(%s in query) > 0",
            (needle,),
        ).fetchall()
    return [r[0] for r in rows]


def gone(url: str, needle: str, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not backends_running(url, needle) and not copy_threads():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("batch_rows", [1, 7, 4096, 25_000, 1_000_000])
def test_every_type_and_edge_equals_adbcs_table(warehouse: str, batch_rows: int) -> None:
    query = "SELECT * FROM decoder.kinds WHERE k < 2000 ORDER BY k" if batch_rows < 100 else (
        "SELECT * FROM decoder.kinds ORDER BY k"
    )  # fmt: skip
    got, sizes = decoded_table(warehouse, query, batch_rows)
    want = adbc_table(warehouse, query)
    assert same_table(got, want)
    assert got.num_rows == (1994 if batch_rows < 100 else 60005)
    assert sizes == [min(batch_rows, got.num_rows - k) for k in range(0, got.num_rows, batch_rows)]
    assert got.column("j")[1].as_py() == "é€😀"
    assert got.column("m")[0].as_py() == "    "


def test_rows_straddle_the_megabyte_chunks(warehouse: str) -> None:
    """About 4 MB of rows with text of every length: many rows cut by the 1 MB buffer's edges."""
    query = "SELECT k, j, repeat(j, 3) AS j3, e FROM decoder.kinds ORDER BY k"
    got, sizes = decoded_table(warehouse, query, 9_999)
    assert same_table(got, adbc_table(warehouse, query))
    assert sizes[:6] == [9_999] * 6
    assert sum(sizes) == 60005


@pytest.mark.parametrize(
    "query",
    ["SELECT * FROM decoder.kinds WHERE false", "SELECT * FROM decoder.kinds WHERE k = 2", "SELECT NULL::text AS x"],
)
def test_an_empty_result_one_row_and_a_lone_null(warehouse: str, query: str) -> None:
    got, _ = decoded_table(warehouse, query, 100)
    assert same_table(got, adbc_table(warehouse, query))


def test_another_type_falls_back_to_adbc_with_the_same_table(
    warehouse: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=copy_stream.__name__)
    monkeypatch.setattr(copy_stream, "_logged", set())  # logged once per process: this test's own first time
    query = "SELECT k, b::numeric AS amount, gen_random_uuid() IS NOT NULL AS u FROM decoder.kinds WHERE k < 100"
    assert copy_batches(warehouse, query, 10) is None
    assert "column 'amount' has type OID 1700" in caplog.text
    schema, batches = extract.source_batches(warehouse, query, WINDOW, "k", KeySlice(0), 10)
    assert not isinstance(batches, CopyBatches)
    assert same_table(pa.Table.from_batches(list(batches), schema), adbc_table(warehouse, query))


def test_the_switch_turns_the_decoder_off(warehouse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    query = "SELECT * FROM decoder.kinds WHERE k < 50"
    _, on = extract.source_batches(warehouse, query, WINDOW, "k", KeySlice(0), 10)
    monkeypatch.setenv("BATCHSCORE_COPY_DECODER", "0")
    schema, off = extract.source_batches(warehouse, query, WINDOW, "k", KeySlice(0), 10)
    assert isinstance(on, CopyBatches)
    assert not isinstance(off, CopyBatches)
    on_table = pa.Table.from_batches(list(on), schema)
    assert same_table(on_table, pa.Table.from_batches(list(off), schema))


def test_a_server_error_mid_stream_raises_and_leaves_no_thread_or_backend(warehouse: str) -> None:
    query = "SELECT g, 1 / (g - 500000) AS boom FROM generate_series(1, 1000000) AS g"
    decoded = copy_batches(warehouse, query, 10_000)
    assert decoded is not None
    rows: list[int] = []
    with pytest.raises(SourceReadError, match="division by zero") as raised:
        rows.extend(batch.num_rows for batch in decoded[1])
    assert raised.value.sqlstate == "22012"
    assert isinstance(raised.value, OSError)  # the kind of error ADBC's reader raised
    assert sum(rows) < 500_000
    assert gone(warehouse, "generate_series(1, 1000000)")


def test_closing_after_the_first_batch_cancels_the_copy(warehouse: str) -> None:
    query = "SELECT g, md5(g::text) AS h FROM generate_series(1, 50000000) AS g"
    decoded = copy_batches(warehouse, query, 1_000)
    assert decoded is not None
    batches = decoded[1]
    first = next(batches)
    assert first.num_rows == 1_000
    assert first.column("g")[0].as_py() == 1
    time.sleep(0.3)  # the COPY thread now waits on the full queue, the server on the socket
    assert backends_running(warehouse, "generate_series(1, 50000000)")
    started = time.monotonic()
    batches.close()
    assert time.monotonic() - started < 5
    assert gone(warehouse, "generate_series(1, 50000000)")
    with pytest.raises(StopIteration):
        next(batches)


def test_a_generator_closed_by_the_engine_closes_the_copy(warehouse: str) -> None:
    """``source_batches`` hands back the stream itself: the engine's ``batches.close()`` reaches the COPY."""
    query = "SELECT g FROM generate_series(1, 40000000) AS g"
    _, batches = extract.source_batches(warehouse, query, WINDOW, "g", KeySlice(0), 500)
    it: Iterator[pa.RecordBatch] = iter(batches)
    assert next(it).num_rows == 500
    batches.close()
    assert gone(warehouse, "generate_series(1, 40000000)")


def test_the_plans_schema_probe_runs_no_copy_and_imports_no_numba(warehouse: str) -> None:
    query = "SELECT * FROM decoder.kinds WHERE g < :window_end"
    script = (
        "import sys, json\n"
        "from datetime import UTC, datetime\n"
        "from batchscore.pipeline.windows import Window\n"
        "from batchscore.source.extract import probe_schema\n"
        "window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))\n"
        f"schema = probe_schema({warehouse!r}, {query!r}, window)\n"
        "print(json.dumps(['numba' in sys.modules, schema.to_string(show_field_metadata=True)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    numba_loaded, described = json.loads(done.stdout.strip().splitlines()[-1])
    assert numba_loaded is False
    want = adbc_table(warehouse, "SELECT * FROM decoder.kinds LIMIT 0").schema
    assert described == want.to_string(show_field_metadata=True)


def test_the_source_time_counts_the_copy_not_the_consumers_pace(warehouse: str) -> None:
    """A consumer that finds every batch queued still learns how long the COPY took (the run record's extract)."""
    created = time.perf_counter()
    decoded = copy_batches(warehouse, "SELECT * FROM decoder.kinds ORDER BY k", 20_000)
    assert decoded is not None
    _, batches = decoded
    time.sleep(3.0)  # the COPY fills its queue of two and waits: that wait is the consumer's, not the source's
    assert sum(b.num_rows for b in batches) == 60005
    batches.close()  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - created
    assert batches.seconds > 0  # type: ignore[attr-defined]
    assert batches.seconds < elapsed - 1.5, "the waits on a full queue are not the source's time"  # type: ignore[attr-defined]
