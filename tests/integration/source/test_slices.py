"""Slices on a real PostgreSQL: disjoint, their union exactly the window, for any key; and a sliced run is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.source import slices
from batchscore.source.extract import render_query, source_batches
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, count, stored_scores

pytestmark = pytest.mark.integration
START = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW = Window(START, START + timedelta(days=1))
QUERY = "SELECT k, v FROM slicing.keys WHERE ts >= :window_start AND ts < :window_end"


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def make_keys(services: Services, key_type: str, keys: list[object]) -> None:
    """``slicing.keys`` with the given keys in WINDOW, plus rows just outside it that no slice may read."""
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS slicing")
        conn.execute("DROP TABLE IF EXISTS slicing.keys")
        conn.execute(f"CREATE TABLE slicing.keys (k {key_type}, v float8, ts timestamptz)")
        with conn.cursor().copy("COPY slicing.keys (k, v, ts) FROM STDIN") as copy:
            for i, key in enumerate(keys):
                copy.write_row((key, float(i), WINDOW.start + timedelta(seconds=i % 86_400)))
            copy.write_row((keys[0] if keys else None, -1.0, WINDOW.start - timedelta(microseconds=1)))
            copy.write_row((keys[0] if keys else None, -2.0, WINDOW.end))
        conn.execute("ANALYZE slicing.keys")


def read_slices(services: Services, cut: tuple[slices.KeySlice, ...]) -> list[list[tuple[object, float]]]:
    """Every slice's rows (key, value), read the way a slice task reads them."""
    out = []
    for key_slice in cut:
        _, batches = source_batches(services.warehouse_url, QUERY, WINDOW, "k", key_slice, 10_000)
        rows: list[tuple[object, float]] = []
        for batch in batches:
            rows += list(zip(batch.column("k").to_pylist(), batch.column("v").to_pylist(), strict=True))
        out.append(rows)
    return out


def cut(services: Services, n: int, estimate: int) -> tuple[slices.KeySlice, ...]:
    return slices.cut(services.warehouse_url, render_query(QUERY, WINDOW), "k", n, estimate)


KEY_SETS = {
    "bigint": ("bigint", list(range(1, 20_001))),
    "bigint skewed": ("bigint", [*range(1, 19_001), *(10**15 + i for i in range(1_000))]),  # a few huge ids
    "text": ("text", [f"cust-{i:06d}" for i in range(20_000)]),
    "text unicode": ("text", [f"{c}{i}" for i in range(4_000) for c in ("a", "B", "é", "Z", "ß")]),
    "integer with NULLs": ("integer", [None if i % 97 == 0 else i for i in range(20_000)]),
    "one key repeated": ("bigint", [7] * 15_000 + list(range(5_000))),
}


@pytest.mark.parametrize("name", list(KEY_SETS))
def test_slices_are_disjoint_and_their_union_is_exactly_the_window(services: Services, name: str) -> None:
    key_type, keys = KEY_SETS[name]
    make_keys(services, key_type, keys)
    pieces = cut(services, 4, len(keys))
    assert 2 <= len(pieces) <= 4
    read = read_slices(services, pieces)
    values = sorted(v for rows in read for _, v in rows)
    assert values == [float(i) for i in range(len(keys))]  # every row of the window once; none outside it
    assert sum(len(rows) for rows in read) == len(keys)
    assert all(rows for rows in read)  # sampled bounds: no empty slice here
    assert max(len(r) for r in read) < 0.5 * len(keys) or name == "one key repeated"  # balanced
    nulls = [i for i, rows in enumerate(read) if any(k is None for k, _ in rows)]
    assert nulls == ([0] if None in keys else [])


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_one_row_windows_make_one_slice_or_empty_slices(services: Services, rows: int) -> None:
    make_keys(services, "bigint", list(range(rows)))
    pieces = cut(services, 4, 1_000_000)  # a stale estimate: many slices asked for, at most one row there
    if rows == 0:
        assert pieces == (slices.WHOLE,)
    read = read_slices(services, pieces)
    assert sum(len(r) for r in read) == rows
    forced = slices.chain([-5, 10**9])  # bounds that leave slices empty
    assert [len(r) for r in read_slices(services, forced)] == [0, rows, 0]


def test_an_aggregating_query_gives_the_same_rows_sliced_and_whole(services: Services) -> None:
    """Features aggregated per customer over the window (and one over the whole window) are unchanged by slicing."""
    config = churn_config()
    aggregates = {
        f: f"min({f})" if f in ("plan", "region", "channel") else f"avg({f})::float8" for f in config.features
    }
    aggregates["discount_rate"] = "avg(avg(discount_rate)) OVER ()::float8"  # over the whole window: not pushed down
    features = ", ".join(f"{expression} AS {name}" for name, expression in aggregates.items())
    query = (
        f"SELECT customer_id, {features} "
        "FROM warehouse.customer_activity WHERE event_time >= :window_start AND event_time < :window_end "
        "GROUP BY customer_id"
    )
    # A table of its own: a two-day window beside churn's day windows would overlap them.
    config = churn_variant("churn_two_days", query)
    window = Window(*day_window(WAREHOUSE_END - timedelta(days=11)))
    window = Window(window.start, window.end + timedelta(days=1))  # two days: customers appear more than once
    run_pipeline(config, endpoints(services), window=window, run_id="it__agg_whole")
    whole = stored_scores(services.scores_url, config.output.table, window.start, window.end).sort_index()
    sliced_config = config.model_copy(
        update={"execution": config.execution.model_copy(update={"slice_rows": 1_000, "max_slices": 5})}
    )
    run_pipeline(sliced_config, endpoints(services), window=window, run_id="it__agg_sliced", max_slices=5)
    sliced = stored_scores(services.scores_url, config.output.table, window.start, window.end).sort_index()
    distinct = count(
        services.warehouse_url,
        "SELECT count(DISTINCT customer_id) FROM warehouse.customer_activity WHERE event_time >= %s "
        "AND event_time < %s AND plan IS NOT NULL AND region <> 'islands'",
        window.start,
        window.end,
    )
    assert len(whole) == len(sliced) == pytest.approx(distinct, rel=0.05)
    assert len(whole) > 2_000
    assert set(sliced["run_id"]) == {"it__agg_sliced"}
    pd.testing.assert_series_equal(whole["score"], sliced["score"])


def test_a_retried_slice_replaces_only_its_own_slice(services: Services) -> None:
    config = churn_config(execution=churn_config().execution.model_copy(update={"slice_rows": 1_000, "max_slices": 3}))
    window = Window(*day_window(WAREHOUSE_END - timedelta(days=10)))
    plan = plan_run(config, endpoints(services), window=window, run_id="it__retry_slice", max_slices=3)
    assert len(plan.key_slices) == 3
    first = [score_slice(config, endpoints(services), plan, s) for s in plan.key_slices]
    retried = score_slice(config, endpoints(services), plan, plan.key_slices[1])  # the retry of slice 1
    assert retried.lineage_id != first[1].lineage_id
    assert (retried.rows_in, retried.rows_scored) == (first[1].rows_in, first[1].rows_scored)
    with psycopg.connect(services.scores_url) as conn:
        lineage = conn.execute(
            "SELECT lineage_id FROM scoring.lineage WHERE run_id = 'it__retry_slice' ORDER BY slice_index"
        ).fetchall()
        tables = {
            r[0]
            for r in conn.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", ([p.table for p in first],))
        }
    assert [r[0] for r in lineage] == [first[0].lineage_id, retried.lineage_id, first[2].lineage_id]
    assert tables == {first[0].table, first[2].table}  # the first attempt of slice 1 is gone, the others kept
    result = publish_run(config, endpoints(services), plan, [first[0], retried, first[2]])
    stored = stored_scores(services.scores_url, "scoring.churn_scores", window.start, window.end)
    assert result.rows_written == len(stored) == sum(p.rows_scored for p in first)
    assert stored.index.is_unique
    again = publish_run(config, endpoints(services), plan, [first[0], retried, first[2]])  # a lost publish, retried
    assert again.rows_written == result.rows_written
    assert len(stored_scores(services.scores_url, "scoring.churn_scores", window.start, window.end)) == len(stored)
