"""The UI's queries over run records on the real PostgreSQL: filters, history, drift and rejects pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from batchscore import db
from batchscore.local.stack import LocalStack
from batchscore.reports import run_views
from batchscore.sink.run_record import apply_schema

pytestmark = pytest.mark.integration

PIPELINE = "ui_views"  # records of its own: other tests share the scores database
OTHER = "ui_views_other"
DAY = datetime(2026, 9, 1, tzinfo=UTC)


def insert_run(conn, pipeline: str, run_id: str, day: int, status: str = "success", **extra: object) -> None:
    start = DAY + timedelta(days=day)
    summary = {"count": 100, "mean": 0.1 * day, "histogram": {"edges": [0, 0.5, 1], "counts": [60, 40]}}
    conn.execute(
        """
        INSERT INTO scoring.scoring_runs (pipeline, run_id, window_start, window_end, status, model_name,
            model_version, model_sha256, output_table, rows_read, rows_rejected, score_summary, shadow,
            started_at, finished_at)
        VALUES (%s, %s, %s, %s, %s, 'm', 1, 'x', 't', 100, %s, %s, %s, %s, %s)
        """,
        (
            pipeline,
            run_id,
            start,
            start + timedelta(days=1),
            status,
            day,
            json.dumps(summary),
            json.dumps(extra.get("shadow")) if extra.get("shadow") else None,
            extra.get("started_at", start + timedelta(days=1)),
            extra.get("finished_at", start + timedelta(days=1, minutes=1)),
        ),
    )


@pytest.fixture(scope="module")
def scores(database: LocalStack) -> str:
    url = database.database_url("scores")
    with db.pg_connect(url, autocommit=True) as conn:
        apply_schema(conn)
        for table in ("scoring_runs", "drift", "rejects"):
            conn.execute(f"DELETE FROM scoring.{table} WHERE pipeline IN (%s, %s)", (PIPELINE, OTHER))
        for day in range(6):
            insert_run(conn, PIPELINE, f"run_{day}", day, shadow={"label_agreement": 0.9} if day == 5 else None)
        # Day 2 scored again later: the window's latest run stands for it in the history.
        insert_run(conn, PIPELINE, "run_2_again", 2, started_at=DAY + timedelta(days=9))
        insert_run(conn, PIPELINE, "run_6_failed", 6, status="failed")
        # Day 3 dry-run later: it published nothing, so the history keeps day 3's published run.
        later = DAY + timedelta(days=10)
        insert_run(conn, PIPELINE, "run_3_dry", 3, status="dry_run", started_at=later, finished_at=later)
        insert_run(conn, OTHER, "run_0", 0)
        for run_id in ("run_4", "run_5"):
            for feature, psi in (("a", 0.01), ("(score)", 0.3)):
                conn.execute(
                    """
                    INSERT INTO scoring.drift (pipeline, run_id, window_start, window_end, feature, kind, psi,
                        threshold, drifted, bins)
                    VALUES (%s, %s, %s, %s, %s, 'numeric', %s, 0.2, %s, '{"labels": ["lo", "hi"]}')
                    """,
                    (PIPELINE, run_id, DAY, DAY + timedelta(days=1), feature, psi, psi > 0.2),
                )
        rejects = [(f"{k:03d}", "plan is NULL", {"plan": None, "k": k}) for k in range(120)]
        rejects += [("900", "region: unseen category 'mars'", {"region": "mars"})]
        rejects += [("901", "region: unseen category 'venus'", {"region": "venus"})]
        rejects += [("902", "x'); DROP TABLE scoring.rejects; --", {"x": "'); DROP"})]
        for key, reason, row in rejects:
            conn.execute(
                "INSERT INTO scoring.rejects (pipeline, window_start, window_end, run_id, entity_key, reason, row_data)"
                " VALUES (%s, %s, %s, 'run_5', %s, %s, %s)",
                (PIPELINE, DAY, DAY + timedelta(days=1), key, reason, json.dumps(row)),
            )
    return url


def test_filters_by_pipeline_status_and_window_with_a_limit_per_pipeline(scores: str) -> None:
    both = run_views.list_runs(scores, run_views.RunFilter(limit=3))
    mine = [r["run_id"] for r in both if r["pipeline"] == PIPELINE]
    assert mine == ["run_6_failed", "run_5", "run_4"]
    assert [r["run_id"] for r in both if r["pipeline"] == OTHER] == ["run_0"]
    failed = run_views.list_runs(scores, run_views.RunFilter(pipeline=PIPELINE, status="failed"))
    assert [r["run_id"] for r in failed] == ["run_6_failed"]
    between = run_views.list_runs(
        scores, run_views.RunFilter(pipeline=PIPELINE, since=DAY + timedelta(days=2), until=DAY + timedelta(days=4))
    )
    assert sorted(r["run_id"] for r in between) == ["run_2", "run_2_again", "run_3", "run_3_dry"]
    assert run_views.list_runs(scores, run_views.RunFilter(pipeline="x'; DROP TABLE scoring.rejects; --")) == []
    with pytest.raises(ValueError, match="status must be one of"):
        run_views.RunFilter(status="done")
    assert run_views.RunFilter(limit=10**9).limit == run_views.MAX_RUNS
    assert PIPELINE in run_views.pipelines(scores)


def test_history_has_one_published_run_per_window_oldest_first(scores: str) -> None:
    runs = run_views.history(scores, PIPELINE, limit=30)  # run_3_dry is newer, but published nothing
    assert [r["run_id"] for r in runs] == ["run_0", "run_1", "run_2_again", "run_3", "run_4", "run_5"]
    assert [r["run_id"] for r in run_views.history(scores, PIPELINE, until=DAY + timedelta(days=3), limit=2)] == [
        "run_2_again",
        "run_3",
    ]
    assert runs[-1]["shadow"] == {"label_agreement": 0.9}
    record = run_views.get_run(scores, PIPELINE, "run_5")
    assert record is not None
    assert record["output_table"] == "t"
    assert record["score_summary"]["mean"] == 0.5
    assert run_views.get_run(scores, PIPELINE, "nope") is None


def test_drift_rows_of_the_runs_asked_for(scores: str) -> None:
    rows = run_views.drift_for_runs(scores, PIPELINE, ["run_5", "run_1"])
    assert [(r["run_id"], r["feature"], r["drifted"]) for r in rows] == [
        ("run_5", "(score)", True),
        ("run_5", "a", False),
    ]
    assert rows[0]["bins"] == {"labels": ["lo", "hi"]}
    assert run_views.drift_for_runs(scores, PIPELINE, []) == []


def test_rejects_grouped_by_kind_of_reason_and_paged(scores: str) -> None:
    reasons = run_views.reject_reasons(scores, PIPELINE, "run_5")
    assert reasons[:2] == [
        {"reason": "plan is NULL", "rows": 120},
        {"reason": "region: unseen category '…'", "rows": 2},
    ]
    first = run_views.rejected_rows(scores, PIPELINE, "run_5", reason="plan is NULL", offset=0, limit=50)
    third = run_views.rejected_rows(scores, PIPELINE, "run_5", reason="plan is NULL", offset=100, limit=50)
    assert [r["entity_key"] for r in first] == [f"{k:03d}" for k in range(50)]
    assert [r["entity_key"] for r in third] == [f"{k:03d}" for k in range(100, 120)]
    assert first[1]["row_data"] == {"plan": None, "k": 1}
    mars = run_views.rejected_rows(scores, PIPELINE, "run_5", reason="region: unseen category '…'")
    assert [r["row_data"]["region"] for r in mars] == ["mars", "venus"]
    hostile = run_views.rejected_rows(scores, PIPELINE, "run_5", reason="x'); DROP TABLE scoring.rejects; --")
    assert [r["entity_key"] for r in hostile] == ["902"]
    assert (
        len(run_views.rejected_rows(scores, PIPELINE, "run_5", offset=-5, limit=10**6)) == 123
    )  # clamped, not refused


def test_the_demo_lists_each_window_once_by_its_latest_run(scores: str) -> None:
    """``make demo`` run twice scores its windows twice: the summary shows each window once, as the history does."""
    from batchscore.local.demo.report import latest_runs

    with db.pg_connect(scores) as conn:
        listed = latest_runs(conn, PIPELINE)
    days = [row[0] for row in listed]
    assert days == sorted(set(days), reverse=True), "each window once, newest first"
    assert {row[0]: row[5] for row in listed}[(DAY + timedelta(days=2)).date()] == "run_2_again"
