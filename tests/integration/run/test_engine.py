"""The engine end to end on a real PostgreSQL: exact scores, exact windows, no partial writes."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from batchscore.models.manifest import RegistryError
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, PlanError, plan_run
from batchscore.scoring.features import SchemaMismatch
from batchscore.sink.publish import RejectThresholdExceeded
from batchscore.sink.volume_guard import VolumeGuardHeld
from batchscore.source.extract import estimate_rows
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, count, expected_scores, run_record, stored_scores

pytestmark = pytest.mark.integration
TABLE = "scoring.churn_scores"


def endpoints(services: Services, **changes: str) -> Endpoints:
    base = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    return Endpoints(**{**base.__dict__, **changes})


def day(n: int) -> Window:
    """The n-th last day of the seeded warehouse (1 = the last)."""
    return Window(*day_window(WAREHOUSE_END - timedelta(days=n)))


def window_count(services: Services, window: Window) -> int:
    return count(
        services.scores_url,
        f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s",
        window.start,
        window.end,
    )


def test_scores_equal_the_models_own_predictions_on_exactly_the_window(services: Services) -> None:
    window = day(1)
    result = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__exact")
    expected, rejected_ids = expected_scores(services.warehouse_url, services.registry, window.start, window.end)
    stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
    assert result.rows_written == len(expected) == len(stored) > 2_000
    assert set(stored.index) == set(expected.index)
    # churn is a Pipeline (ColumnTransformer -> trees): its stored scores are its own predict_proba, bit for bit
    np.testing.assert_array_equal(stored.loc[expected.index, "score"].to_numpy(), expected["score"].to_numpy())
    assert set(stored["label"]) <= {"0", "1"}
    manifest = ModelRegistry(services.registry).resolve("churn", "champion")
    assert set(stored["model_sha256"]) == {manifest.sha256}
    assert set(stored["model_version"]) == {manifest.version}
    assert set(stored["run_id"]) == {"it__exact"}
    with psycopg.connect(services.scores_url) as conn:
        rejects = conn.execute(
            "SELECT entity_key, reason FROM scoring.rejects WHERE pipeline = 'churn' AND window_start = %s",
            (window.start,),
        ).fetchall()
    assert {int(k) for k, _ in rejects} == rejected_ids
    assert len(rejected_ids) > 0
    assert all(r in ("plan is NULL", "region: unseen category 'islands'") for _, r in rejects)
    record = run_record(services.scores_url, "churn", "it__exact")
    assert record is not None
    assert record["status"] == "success"
    assert record["rows_read"] == len(expected) + len(rejected_ids)
    assert (record["rows_scored"], record["rows_written"], record["rows_rejected"]) == (
        len(expected),
        len(expected),
        len(rejected_ids),
    )
    assert record["score_summary"]["count"] == len(expected)
    assert record["score_summary"]["mean"] == pytest.approx(expected["score"].mean(), rel=1e-9)


def test_the_run_records_its_cpu_seconds_per_stage(services: Services) -> None:
    """Cost per prediction: CPU per stage per slice and summed, and rows per CPU second, in scoring_runs."""
    window = day(3)
    config = churn_config(execution=churn_config().execution.model_copy(update={"slice_rows": 500}))
    run_pipeline(config, endpoints(services), window=window, run_id="it__cpu", max_slices=2)
    record = run_record(services.scores_url, "churn", "it__cpu")
    assert record is not None
    stages = ("read", "score", "load", "publish", "startup", "model")
    costs = {stage: record[f"{stage}_cpu_seconds"] for stage in stages}
    assert all(v is not None and v >= 0 for v in costs.values()), costs
    assert costs["score"] > 0  # the slices scored thousands of rows
    slices = record["slices"]
    assert len(slices) == 2
    assert costs["score"] == pytest.approx(sum(s["cpu"]["score"] for s in slices), abs=2e-3)
    assert costs["read"] == pytest.approx(sum(s["cpu"]["read"] for s in slices), abs=2e-3)
    total = sum(s["cpu"]["startup"] + s["cpu"]["total"] for s in slices) + costs["publish"]
    assert record["cpu_seconds"] == pytest.approx(total, abs=5e-3)
    assert all(s["cpu"]["total"] >= s["cpu"]["score"] for s in slices)
    # the rate is of the stored (millisecond) total, itself stored to a tenth of a row
    assert record["rows_per_cpu_second"] == pytest.approx(record["rows_scored"] / record["cpu_seconds"], abs=0.051)


def test_cpu_columns_are_added_to_a_database_made_before_them(services: Services) -> None:
    """scoring.sql adds the CPU columns in place; applying it again leaves them."""
    from batchscore.sink.run_record import apply_schema

    with psycopg.connect(services.scores_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE scoring.scoring_runs DROP COLUMN IF EXISTS rows_per_cpu_second")
        conn.execute("ALTER TABLE scoring.scoring_runs DROP COLUMN IF EXISTS score_cpu_seconds")
        apply_schema(conn)
        apply_schema(conn)
        names = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'scoring' AND table_name = 'scoring_runs'"
            ).fetchall()
        }
    assert {"rows_per_cpu_second", "score_cpu_seconds", "read_cpu_seconds", "publish_cpu_seconds"} <= names


def test_rerun_replaces_the_window_and_never_duplicates(services: Services) -> None:
    window = day(2)
    first = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__rerun1")
    second = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__rerun2")
    stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
    assert first.rows_written == second.rows_written == len(stored)
    assert stored.index.is_unique
    assert set(stored["run_id"]) == {"it__rerun2"}
    assert (
        count(
            services.scores_url,
            "SELECT count(*) FROM scoring.rejects WHERE pipeline = 'churn' AND window_start = %s",
            window.start,
        )
        == second.rows_rejected
    )


def test_lineage_names_the_model_that_made_the_rows_even_after_a_failed_reattempt(
    services: Services, tmp_path: Path
) -> None:
    """A retry of the same run with another model that fails leaves the old rows traced to the old model."""
    from batchscore.local.demo.model import train_and_register

    registry = tmp_path / "registry"
    shutil.copytree(services.registry, registry)
    v1 = ModelRegistry(str(registry)).resolve("churn", "champion")
    window = day(3)
    run_pipeline(churn_config(), endpoints(services, registry=str(registry)), window=window, run_id="it__lineage")
    v2 = train_and_register(services.warehouse_url, str(registry), train=Window(day(12).start, day(9).end), max_iter=5)
    assert v2.sha256 != v1.sha256
    strict = churn_config(validation=churn_config().validation.model_copy(update={"max_reject_fraction": 0.0}))
    with pytest.raises(RejectThresholdExceeded):
        run_pipeline(strict, endpoints(services, registry=str(registry)), window=window, run_id="it__lineage")
    stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
    assert set(stored["model_sha256"]) == {v1.sha256}
    assert set(stored["run_id"]) == {"it__lineage"}
    record = run_record(services.scores_url, "churn", "it__lineage")
    assert record is not None
    assert (record["status"], record["model_sha256"]) == ("failed", v2.sha256)  # the attempt, not the rows
    with psycopg.connect(services.scores_url) as conn:
        lineage = conn.execute(
            "SELECT model_sha256, published_at IS NOT NULL, rows_written FROM scoring.lineage "
            "WHERE pipeline = 'churn' AND run_id = 'it__lineage'"
        ).fetchall()
    assert lineage == [(v1.sha256, True, len(stored))]  # the failed attempt left no lineage row


def test_window_is_half_open_on_the_source_event_time(services: Services) -> None:
    window = day(3)
    edge_ids = (9_000_001, 9_000_002, 9_000_003)
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        for cid, at in zip(edge_ids, (window.start, window.end - timedelta(microseconds=1), window.end), strict=True):
            conn.execute(
                "INSERT INTO warehouse.customer_activity SELECT %s, %s, plan, region, channel, tenure_days, "
                "monthly_spend, txn_count_7d, txn_amount_7d, support_tickets_30d, days_since_last_login, "
                "avg_session_minutes, discount_rate, late_payments_90d, churned FROM warehouse.customer_activity "
                "WHERE plan IS NOT NULL AND region <> 'islands' LIMIT 1",
                (cid, at),
            )
    try:
        run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__edges")
        stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
        assert 9_000_001 in stored.index
        assert 9_000_002 in stored.index
        assert 9_000_003 not in stored.index
    finally:
        with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
            conn.execute("DELETE FROM warehouse.customer_activity WHERE customer_id = ANY(%s)", (list(edge_ids),))


def test_planner_estimate_of_the_window_is_in_the_right_range(services: Services) -> None:
    window = day(4)
    actual = count(
        services.warehouse_url,
        "SELECT count(*) FROM warehouse.customer_activity WHERE event_time >= %s AND event_time < %s",
        window.start,
        window.end,
    )
    estimate = estimate_rows(services.warehouse_url, churn_config().source.query, window)
    assert estimate is not None
    assert actual / 3 < estimate < actual * 3  # an estimate for ETAs, not a count
    assert estimate_rows("sqlite:///nowhere.db", "SELECT 1", window) is None


def test_many_slices_score_the_same_as_one(services: Services) -> None:
    window = day(5)
    run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__one_slice")
    one = stored_scores(services.scores_url, TABLE, window.start, window.end).sort_index()
    config = churn_config(execution=churn_config().execution.model_copy(update={"slice_rows": 500}))
    result = run_pipeline(config, endpoints(services), window=window, run_id="it__many_slices", max_slices=4)
    many = stored_scores(services.scores_url, TABLE, window.start, window.end).sort_index()
    record = run_record(services.scores_url, "churn", "it__many_slices")
    assert record is not None
    assert len(record["slices"]) == 4
    assert sum(s["rows_in"] for s in record["slices"]) == record["rows_read"]
    assert result.rows_written == len(many) == len(one)
    pd.testing.assert_series_equal(one["score"], many["score"])
    assert set(many["run_id"]) == {"it__many_slices"}
    with psycopg.connect(services.scores_url) as conn:
        lineage = conn.execute(
            "SELECT slice_index, rows_written FROM scoring.lineage WHERE run_id = 'it__many_slices' ORDER BY 1"
        ).fetchall()
    assert [i for i, _ in lineage] == [0, 1, 2, 3]
    assert sum(n for _, n in lineage) == len(many)
    assert all(n > 0 for _, n in lineage)


def test_an_empty_window_publishes_nothing_unless_allowed(services: Services) -> None:
    window = Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    with pytest.raises(VolumeGuardHeld, match=r"^volume guard: 0 rows < "):
        run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__empty")
    record = run_record(services.scores_url, "churn", "it__empty")
    assert record is not None
    assert (record["status"], record["rows_read"], record["failed_stage"]) == ("failed", 0, "publish")
    assert record["volume"]["held"] is True
    result = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__empty_ok", allow_shrink=True)
    record = run_record(services.scores_url, "churn", "it__empty_ok")
    assert result.rows_written == 0
    assert window_count(services, window) == 0
    assert record is not None
    assert (record["status"], record["rows_read"], record["rows_written"]) == ("success", 0, 0)
    assert record["volume"]["allowed"] is True


def test_dry_run_publishes_nothing(services: Services) -> None:
    window = day(6)
    before = stored_scores(services.scores_url, TABLE, window.start, window.end)  # other tests may have scored it
    result = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__dry", dry_run=True)
    record = run_record(services.scores_url, "churn", "it__dry")
    assert not result.published
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, TABLE, window.start, window.end))
    assert "it__dry" not in set(before["run_id"])
    assert record is not None
    assert record["status"] == "dry_run"
    assert record["rows_scored"] > 2_000


def test_too_many_rejects_publish_nothing_and_keep_the_old_scores(services: Services) -> None:
    window = day(6)  # one day: each customer has one row a day, so a longer window would repeat every key
    first = run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__before_strict")
    assert first.rows_rejected > 0
    before = stored_scores(services.scores_url, TABLE, window.start, window.end)
    strict = churn_config(validation=churn_config().validation.model_copy(update={"max_reject_fraction": 0.0}))
    with pytest.raises(RejectThresholdExceeded, match=r"failed validation, above max_reject_fraction=0\.00%"):
        run_pipeline(strict, endpoints(services), window=window, run_id="it__strict")
    after = stored_scores(services.scores_url, TABLE, window.start, window.end)
    pd.testing.assert_frame_equal(before, after)
    record = run_record(services.scores_url, "churn", "it__strict")
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "publish")
    assert record["error"].startswith("RejectThresholdExceeded: ")
    assert "max_reject_fraction" in record["remedy"]
    assert (record["rows_read"], record["rows_rejected"]) == (
        first.rows_written + first.rows_rejected,
        first.rows_rejected,
    )
    kept = count(
        services.scores_url, "SELECT count(*) FROM scoring.rejects WHERE pipeline = 'churn' AND run_id = 'it__strict'"
    )
    assert kept == first.rows_rejected, "a failed run's bad rows are kept aside, under its run id"


def test_corrupted_model_fails_before_anything_is_written(services: Services, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(services.registry, registry)
    manifest = ModelRegistry(str(registry)).resolve("churn", "champion")
    artifact = registry / "churn" / manifest.artifact
    artifact.write_bytes(artifact.read_bytes()[:-100])
    window = day(8)
    before = stored_scores(services.scores_url, TABLE, window.start, window.end)  # other tests may have scored it
    with pytest.raises(RegistryError, match="does not match its manifest"):
        run_pipeline(churn_config(), endpoints(services, registry=str(registry)), window=window, run_id="it__corrupt")
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, TABLE, window.start, window.end))
    record = run_record(services.scores_url, "churn", "it__corrupt")
    assert record is not None, "a run failing in plan is recorded too"
    assert (record["status"], record["failed_stage"], record["window_start"]) == ("failed", "plan", window.start)
    assert record["error"].startswith("RegistryError: ")
    assert "does not match its manifest" in record["error"]
    assert "sha256" in record["remedy"]


def test_model_that_does_not_fit_the_pipeline_fails_at_plan(services: Services) -> None:
    config = churn_config(features=tuple(f for f in churn_config().features if f != "channel"))
    with pytest.raises(PlanError, match="the model needs channel which the pipeline does not list"):
        plan_run(config, endpoints(services), window=day(8), run_id="it__misfit")
    assert run_record(services.scores_url, "churn", "it__misfit") is None


def test_source_missing_a_feature_fails_at_plan(services: Services) -> None:
    config = churn_config()
    query = config.source.query.replace("region, channel,", "region,")
    config = config.model_copy(update={"source": config.source.model_copy(update={"query": query})})
    with pytest.raises(SchemaMismatch, match="does not return channel"):
        plan_run(config, endpoints(services), window=day(8), run_id="it__nocol")
    assert run_record(services.scores_url, "churn", "it__nocol") is None


def test_unknown_model_version_fails_at_plan(services: Services) -> None:
    with pytest.raises(RegistryError, match="no version 99"):
        plan_run(churn_config(), endpoints(services), window=day(8), run_id="it__v99", model_ref="99")


def test_generic_sqlalchemy_source_gives_the_same_scores(services: Services, tmp_path: Path) -> None:
    window = day(9)
    run_pipeline(churn_config(), endpoints(services), window=window, run_id="it__pg_path")
    via_pg = stored_scores(services.scores_url, TABLE, window.start, window.end)["score"].sort_index()
    with psycopg.connect(services.warehouse_url) as conn:
        cur = conn.execute(
            "SELECT * FROM warehouse.customer_activity WHERE event_time >= %s AND event_time < %s",
            (window.start - timedelta(hours=1), window.end + timedelta(hours=1)),
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    frame["event_time"] = frame["event_time"].map(lambda t: t.astimezone(UTC).isoformat(sep=" "))
    database = tmp_path / "warehouse.sqlite"
    with sqlite3.connect(database) as conn:
        frame.to_sql("customer_activity", conn, index=False)
    config = churn_config()
    sqlite_query = config.source.query.replace("warehouse.customer_activity", "customer_activity")
    config = config.model_copy(update={"source": config.source.model_copy(update={"query": sqlite_query})})
    run_pipeline(config, endpoints(services, source_url=f"sqlite:///{database}"), window=window, run_id="it__sqlite")
    via_sqlite = stored_scores(services.scores_url, TABLE, window.start, window.end)["score"].sort_index()
    pd.testing.assert_series_equal(via_pg, via_sqlite)


def test_recent_runs_lists_newest_first_and_filters(services: Services) -> None:
    from batchscore.sink.run_record import recent_runs

    run_pipeline(churn_config(), endpoints(services), window=day(1), run_id="it__older")
    run_pipeline(churn_config(), endpoints(services), window=day(1), run_id="it__latest")
    runs = recent_runs(services.scores_url, pipeline="churn", limit=2)
    assert [r["run_id"] for r in runs] == ["it__latest", "it__older"]
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs), reverse=True)
    assert recent_runs(services.scores_url, pipeline="nope") == []


def test_publish_waits_for_the_windows_lock_then_fails_clearly(services: Services) -> None:
    from batchscore.run.stages import score_slice
    from batchscore.sink.publish import PublishLockTimeout, publish_window

    config, window = churn_config(), day(2)
    run_pipeline(config, endpoints(services), window=window, run_id="it__lock_before")
    before = stored_scores(services.scores_url, TABLE, window.start, window.end)
    plan = plan_run(config, endpoints(services), window=window, run_id="it__lock_blocked")
    results = [score_slice(config, endpoints(services), plan, s) for s in plan.key_slices]
    key = f"batchscore:publish:{TABLE}:{window.start.isoformat()}:{window.end.isoformat()}"
    with psycopg.connect(services.scores_url) as holder:  # another run is publishing this window
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        with pytest.raises(PublishLockTimeout, match="another run kept publishing window"):
            publish_window(
                services.scores_url,
                pipeline="churn",
                output_table=TABLE,
                window=window,
                run_id=plan.run_id,
                slices=results,
                max_reject_fraction=0.01,
                lock_timeout_seconds=1,
            )
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, TABLE, window.start, window.end))
