"""Windows of one scores table never overlap: plan refuses, and so does publish for a race plan cannot see."""

from __future__ import annotations

import re
from datetime import timedelta

import pandas as pd
import psycopg
import pytest

from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.published_windows import OverlappingWindow, published_windows
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, run_record, stored_scores

pytestmark = pytest.mark.integration
DAY = Window(*day_window(WAREHOUSE_END - timedelta(days=8)))
HALF_DAY = Window(DAY.start, DAY.start + timedelta(hours=12))


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def test_plan_refuses_a_window_overlapping_a_published_one_and_names_it(services: Services) -> None:
    config = churn_variant("ov_plan", churn_config().source.query)
    run_pipeline(config, endpoints(services), window=DAY, run_id="it__ov_day")
    before = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    with psycopg.connect(services.scores_url) as conn:
        [published] = published_windows(conn, config.output.table)
    assert published.window == DAY
    cause = (
        f"window {HALF_DAY} overlaps the published window {DAY} of {config.output.table} (pipeline ov_plan): the "
        "same hours would have two scores. To replace that window's scores, re-run it with its exact bounds "
        f"(window_start={DAY.start.isoformat()}, window_end={DAY.end.isoformat()}); to re-cut it, drop its "
        f"partition {published.partition} first"
    )
    with pytest.raises(OverlappingWindow) as refused:
        run_pipeline(config, endpoints(services), window=HALF_DAY, run_id="it__ov_half")
    assert str(refused.value) == cause
    record = run_record(services.scores_url, config.name, "it__ov_half")
    assert record is not None
    assert (record["status"], record["failed_stage"], record["error"]) == (
        "failed",
        "plan",
        f"OverlappingWindow: {cause}",
    )
    assert "exact bounds" in record["remedy"]
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end))
    across = Window(DAY.start + timedelta(hours=12), DAY.end + timedelta(hours=12))
    with pytest.raises(OverlappingWindow, match=r"overlaps the published window"):
        plan_run(config, endpoints(services), window=across, run_id="it__ov_across")
    # The same bounds replace; windows that only touch it do not overlap.
    plan_run(config, endpoints(services), window=DAY, run_id="it__ov_same")
    plan_run(config, endpoints(services), window=Window(DAY.end, DAY.end + timedelta(hours=12)), run_id="it__ov_next")
    plan_run(config, endpoints(services), window=Window(DAY.start - timedelta(days=1), DAY.start), run_id="it__ov_prev")


def test_publish_refuses_an_overlapping_window_published_after_its_plan(services: Services) -> None:
    """Two runs planned before either published: the second to publish finds the first's window and rolls back."""
    config = churn_variant("ov_race", churn_config().source.query)
    day_plan = plan_run(config, endpoints(services), window=DAY, run_id="it__race_day")
    half_plan = plan_run(config, endpoints(services), window=HALF_DAY, run_id="it__race_half")
    day_slices = [score_slice(config, endpoints(services), day_plan, s) for s in day_plan.key_slices]
    half_slices = [score_slice(config, endpoints(services), half_plan, s) for s in half_plan.key_slices]
    publish_run(config, endpoints(services), day_plan, day_slices)
    day_scores = stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    with pytest.raises(OverlappingWindow, match=re.escape(f"window {HALF_DAY} overlaps the published window {DAY}")):
        publish_run(config, endpoints(services), half_plan, half_slices)
    pd.testing.assert_frame_equal(
        day_scores, stored_scores(services.scores_url, config.output.table, DAY.start, DAY.end)
    )
    with psycopg.connect(services.scores_url) as conn:
        assert [p.window for p in published_windows(conn, config.output.table)] == [DAY]
        left = conn.execute(
            "SELECT count(*) FROM scoring.lineage WHERE run_id = 'it__race_half' AND published_at IS NULL"
        ).fetchone()
    assert left == (0,), "the refused run's slices are dropped"
    record = run_record(services.scores_url, config.name, "it__race_half")
    assert record is not None
    assert record["status"] == "failed"
    assert record["rows_scored"] == sum(s.rows_scored for s in half_slices) > 0
