"""The volume guard on a real PostgreSQL: a shrunken or empty source never replaces a window's good scores."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import psycopg
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from batchscore.sink.published_windows import published_windows
from batchscore.sink.volume_guard import VolumeGuardHeld
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, count, run_record, stored_scores

pytestmark = pytest.mark.integration
DAY = Window(*day_window(WAREHOUSE_END - timedelta(days=7)))
NEXT_DAY = Window(DAY.end, DAY.end + timedelta(days=1))


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def guarded(services: Services, name: str, *days: Window, **validation: object) -> PipelineConfig:
    """churn as pipeline ``name`` reading a source table of its own, filled with the warehouse's rows of ``days``."""
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS volume_guard")
        conn.execute(f"DROP TABLE IF EXISTS volume_guard.{name}")
        conn.execute(f"CREATE TABLE volume_guard.{name} (LIKE warehouse.customer_activity)")
        for day in days:
            conn.execute(
                f"INSERT INTO volume_guard.{name} SELECT * FROM warehouse.customer_activity "
                "WHERE event_time >= %s AND event_time < %s",
                (day.start, day.end),
            )
    query = churn_config().source.query.replace("warehouse.customer_activity", f"volume_guard.{name}")
    return churn_variant(name, query, **validation)


def shrink(services: Services, name: str, percent: int) -> None:
    """Delete ``percent`` % of the source's customers (by id), as a purge or a partial upstream load would."""
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM volume_guard.{name} WHERE customer_id %% 100 < %s", (percent,))


def test_a_window_whose_source_was_emptied_keeps_its_scores_and_the_run_fails_naming_the_guard(
    services: Services,
) -> None:
    config = guarded(services, "vg_emptied", DAY)
    first = run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_emptied_1")
    before = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    assert first.rows_written == len(before) > 2_000
    shrink(services, "vg_emptied", 100)
    cause = (
        f"volume guard: 0 rows < 90% of the {len(before):,} the window holds now; nothing was published for "
        f"window {DAY}; pass allow_shrink: true to replace"
    )
    with pytest.raises(VolumeGuardHeld) as held:
        run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_emptied_2")
    assert str(held.value) == cause
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end))
    record = run_record(services.scores_url, config.name, "it__vg_emptied_2")
    assert record is not None
    assert (record["status"], record["failed_stage"], record["error"]) == (
        "failed",
        "publish",
        f"VolumeGuardHeld: {cause}",
    )
    assert "allow_shrink: true" in record["remedy"]
    assert (record["rows_read"], record["rows_scored"]) == (0, 0)
    assert record["volume"] == {
        "rows": 0,
        "required": math.ceil(0.9 * len(before)),
        "basis": "window",
        "baseline": len(before),
        "fraction": 0.9,
        "history": 0,
        "held": True,
        "allowed": False,
    }
    unpublished = "SELECT count(*) FROM scoring.lineage WHERE run_id = %s AND published_at IS NULL"
    assert count(services.scores_url, unpublished, "it__vg_emptied_2") == 0, "the held run's slices are dropped"


@pytest.mark.parametrize(("percent", "published"), [(40, False), (2, True)])
def test_a_40_percent_shrink_is_held_and_a_2_percent_shrink_is_published(
    services: Services, percent: int, published: bool
) -> None:
    name = f"vg_shrink_{percent}"
    config = guarded(services, name, DAY)
    run_pipeline(config, endpoints(services), window=DAY, run_id=f"it__{name}_1")
    before = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    shrink(services, name, percent)
    if published:
        result = run_pipeline(config, endpoints(services), window=DAY, run_id=f"it__{name}_2")
        after = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
        assert result.rows_written == len(after) == len([k for k in before.index if k % 100 >= percent])
        assert set(after["run_id"]) == {f"it__{name}_2"}
        record = run_record(services.scores_url, config.name, f"it__{name}_2")
        assert record is not None
        assert record["status"] == "success"
        assert (record["volume"]["basis"], record["volume"]["held"]) == ("window", False)
    else:
        with pytest.raises(VolumeGuardHeld, match=rf"volume guard: [\d,]+ rows < 90% of the {len(before):,} the"):
            run_pipeline(config, endpoints(services), window=DAY, run_id=f"it__{name}_2")
        after = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
        pd.testing.assert_frame_equal(before, after)


def test_allow_shrink_replaces_the_window(services: Services) -> None:
    config = guarded(services, "vg_allowed", DAY)
    run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_allowed_1")
    before = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    shrink(services, "vg_allowed", 40)
    with pytest.raises(VolumeGuardHeld):
        run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_allowed_2")
    result = run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_allowed_3", allow_shrink=True)
    after = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    assert result.rows_written == len(after) == len([k for k in before.index if k % 100 >= 40])
    assert set(after["run_id"]) == {"it__vg_allowed_3"}
    record = run_record(services.scores_url, config.name, "it__vg_allowed_3")
    assert record is not None
    assert record["status"] == "success"
    assert (record["volume"]["held"], record["volume"]["allowed"], record["volume"]["baseline"]) == (
        False,
        True,
        len(before),
    )


def test_a_nightly_window_with_no_rows_yet_fails_naming_the_guard(services: Services) -> None:
    config = guarded(services, "vg_nightly", DAY)  # the next day's upstream has not landed
    first = run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_nightly_1")
    with pytest.raises(VolumeGuardHeld) as held:
        run_pipeline(config, endpoints(services), window=NEXT_DAY, run_id="it__vg_nightly_2")
    assert str(held.value) == (
        f"volume guard: 0 rows < 50% of {first.rows_written:,}, the median of the pipeline's last 1 published "
        f"windows (for a window of this length); nothing was published for window {NEXT_DAY}; "
        "pass allow_shrink: true to publish"
    )
    record = run_record(services.scores_url, config.name, "it__vg_nightly_2")
    assert record is not None
    assert (record["status"], record["volume"]["basis"]) == ("failed", "history")
    assert record["error"].startswith("VolumeGuardHeld: volume guard: 0 rows")
    with psycopg.connect(services.scores_url) as conn:
        assert [p.window for p in published_windows(conn, config.output.table)] == [DAY]


def test_a_first_window_uses_min_rows_only(services: Services) -> None:
    config = guarded(services, "vg_first")  # an empty source, and no window published before
    with pytest.raises(VolumeGuardHeld) as held:
        run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_first_1")
    assert str(held.value) == (
        f"volume guard: 0 rows < min_rows 1 (the source returned no rows); nothing was published for window {DAY}; "
        "pass allow_shrink: true to publish"
    )
    few = guarded(services, "vg_first", DAY)
    shrink(services, "vg_first", 99)  # a first window of about 30 rows: no history to hold it to
    result = run_pipeline(few, endpoints(services), window=DAY, run_id="it__vg_first_2")
    assert 0 < result.rows_written < 100
    strict = guarded(services, "vg_first_strict", DAY, min_rows=5_000)
    with pytest.raises(VolumeGuardHeld, match=r"rows < min_rows 5,000; nothing was published"):
        run_pipeline(strict, endpoints(services), window=DAY, run_id="it__vg_first_strict")


def test_history_is_judged_per_hour_of_window(services: Services) -> None:
    """A half-day window after day windows needs half a day's rows, not a day's."""
    config = guarded(services, "vg_hours", DAY, NEXT_DAY)
    day = run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_hours_day")
    half = Window(NEXT_DAY.start, NEXT_DAY.start + timedelta(hours=12))
    result = run_pipeline(config, endpoints(services), window=half, run_id="it__vg_hours_half")
    assert 0.4 * day.rows_written < result.rows_written < 0.6 * day.rows_written
    record = run_record(services.scores_url, config.name, "it__vg_hours_half")
    assert record is not None
    assert record["volume"]["basis"] == "history"
    assert record["volume"]["baseline"] == pytest.approx(day.rows_written / 2, abs=1)


def test_a_dry_run_records_what_a_real_run_would_do(services: Services) -> None:
    config = guarded(services, "vg_dry", DAY)
    run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_dry_1")
    shrink(services, "vg_dry", 100)
    result = run_pipeline(config, endpoints(services), window=DAY, run_id="it__vg_dry_2", dry_run=True)
    assert not result.published
    record = run_record(services.scores_url, config.name, "it__vg_dry_2")
    assert record is not None
    assert (record["status"], record["volume"]["held"], record["volume"]["rows"]) == ("dry_run", True, 0)
