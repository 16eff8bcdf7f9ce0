"""The real DAG through Airflow's own dag.test(): every task runs, mapped predict included."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CHALLENGER, SHADOW, SHADOW_TABLE, STACK, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import count, expected_scores, run_record, stored_scores

pytestmark = pytest.mark.airflow
REPO = Path(__file__).resolve().parents[2]


def scores_events(run_id: str) -> list[tuple[str, str, dict]]:
    """The asset events a run's tasks emitted, as (asset name, asset URI, extra), from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run_id)).all()
        return [(e.asset.name, e.asset.uri, dict(e.extra)) for e in events]


@pytest.fixture(scope="module")
def churn_dag(airflow_db: Services):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(STACK.dags_dir)).dags["score_churn"]


def test_dag_test_scores_the_window_from_the_trigger_form(churn_dag, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=2))
    run = churn_dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    assert run.state == "success"
    expected, rejected = expected_scores(airflow_db.warehouse_url, airflow_db.registry, start, end)
    stored = stored_scores(airflow_db.scores_url, "scoring.churn_scores", start, end)
    assert len(stored) == len(expected)
    assert stored.index.is_unique
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
    assert set(stored["run_id"]) == {run.run_id}
    record = run_record(airflow_db.scores_url, "churn", run.run_id)
    assert record is not None
    assert (record["status"], record["rows_written"], record["rows_rejected"]) == (
        "success",
        len(expected),
        len(rejected),
    )
    assert record["extract_seconds"] > 0
    assert record["predict_seconds"] > 0
    assert record["load_seconds"] > 0
    [(name, uri, extra)] = scores_events(run.run_id)
    assert (name, uri) == ("scores_churn", "batchscore://scores_db/scoring.churn_scores")
    assert (extra["published"], extra["rows"], extra["window_start"]) == (True, len(expected), start.isoformat())


def test_dag_test_dry_run_with_an_explicit_model_version(churn_dag, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=8))
    before = stored_scores(airflow_db.scores_url, "scoring.churn_scores", start, end)
    run = churn_dag.test(
        run_conf={
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "model_version": "1",
            "dry_run": True,
        }
    )
    assert run.state == "success"
    record = run_record(airflow_db.scores_url, "churn", run.run_id)
    assert record is not None
    assert record["status"] == "dry_run"
    assert record["model_version"] == 1
    assert stored_scores(airflow_db.scores_url, "scoring.churn_scores", start, end).equals(before)
    assert scores_events(run.run_id) == [], "a dry run publishes nothing, so no downstream DAG is told of scores"


def test_bad_trigger_param_fails_the_run_before_anything_is_written(churn_dag, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=9))
    before = stored_scores(airflow_db.scores_url, "scoring.churn_scores", start, end)
    run = churn_dag.test(
        run_conf={"window_start": start.isoformat(), "window_end": (start - timedelta(days=1)).isoformat()}
    )
    assert run.state == "failed"
    assert stored_scores(airflow_db.scores_url, "scoring.churn_scores", start, end).equals(before)
    assert count(airflow_db.scores_url, "SELECT count(*) FROM scoring.lineage WHERE run_id = %s", run.run_id) == 0
    plan = run.get_task_instance("plan")
    assert plan is not None
    assert (plan.state, plan.try_number) == ("failed", 1), "a bad parameter is not retried"
    record = run_record(airflow_db.scores_url, "churn", run.run_id)
    assert record is not None, "a run failing in plan is recorded"
    assert (record["status"], record["failed_stage"], record["window_start"]) == ("failed", "plan", None)
    assert (
        record["error"]
        == f"WindowError: window start {start.isoformat()} must be before end {(start - timedelta(days=1)).isoformat()}"
    )


def test_allow_shrink_from_the_trigger_form_reaches_the_volume_guard(churn_dag, airflow_db: Services) -> None:
    """A window with no source rows: held once (no retry) naming the guard; allow_shrink: true publishes it."""
    from datetime import UTC, datetime

    params = churn_dag.params
    assert params.get_param("allow_shrink").schema["title"] == "Allow shrink"
    start = datetime(2025, 2, 1, tzinfo=UTC)  # long before the seeded warehouse: no rows
    # Every field given: dag.test() keeps an earlier test's run_conf in this module's DAG object.
    conf = {
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(days=1)).isoformat(),
        "model_version": None,
        "dry_run": False,
        "allow_shrink": False,
    }
    held = churn_dag.test(run_conf=conf)
    assert held.state == "failed"
    publish = held.get_task_instance("publish")
    assert publish is not None
    assert (publish.state, publish.try_number) == ("failed", 1), "a held run is not retried"
    record = run_record(airflow_db.scores_url, "churn", held.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "publish")
    assert record["error"].startswith("VolumeGuardHeld: volume guard: 0 rows < ")
    assert record["error"].endswith("pass allow_shrink: true to publish")
    assert "allow_shrink" in record["remedy"]
    allowed = churn_dag.test(run_conf={**conf, "allow_shrink": True})
    assert allowed.state == "success"
    record = run_record(airflow_db.scores_url, "churn", allowed.run_id)
    assert record is not None
    assert (record["status"], record["rows_written"]) == ("success", 0)
    assert (record["volume"]["held"], record["volume"]["allowed"]) == (False, True)


def test_sliced_dag_and_the_in_process_runner_give_identical_scores(airflow_db: Services) -> None:
    """Three mapped slice tasks through dag.test() store the same rows as one slice in one process."""
    from airflow.dag_processing.dagbag import DagBag

    from batchscore.pipeline.config import load_config
    from batchscore.pipeline.windows import Window
    from batchscore.run.in_process import run_pipeline
    from batchscore.run.planning import Endpoints
    from tests.conftest import PIPELINES, SLICED, SLICED_TABLE

    dag = DagBag(dag_folder=str(STACK.dags_dir)).dags[f"score_{SLICED}"]
    start, end = day_window(WAREHOUSE_END - timedelta(days=4))
    run = dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    assert run.state == "success"
    through_dag = stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end)
    record = run_record(airflow_db.scores_url, SLICED, run.run_id)
    assert record is not None
    assert len(record["slices"]) == 3
    assert sorted(s["index"] for s in record["slices"]) == [0, 1, 2]
    assert sum(s["rows_in"] for s in record["slices"]) == record["rows_read"]
    assert all(s["rows_scored"] > 0 for s in record["slices"])
    assert record["plan_seconds"] > 0

    config = load_config(PIPELINES / f"{SLICED}.yaml")
    endpoints = Endpoints(airflow_db.warehouse_url, airflow_db.scores_url, airflow_db.registry)
    run_pipeline(config, endpoints, window=Window(start, end), run_id="it__in_process")
    in_process = stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end)
    assert len(through_dag) == len(in_process) > 2_000
    assert through_dag.index.is_unique
    pd_cols = ["score", "label", "model_sha256"]
    assert through_dag.sort_index()[pd_cols].equals(in_process.sort_index()[pd_cols])  # row for row, bit for bit
    expected, _ = expected_scores(airflow_db.warehouse_url, airflow_db.registry, start, end)
    np.testing.assert_allclose(through_dag.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)


def test_dag_test_of_the_segments_pipeline_stores_the_clusterers_labels(airflow_db: Services) -> None:
    """The clusterer through the DAG's tasks: labels only (no score), the partial summaries merged through XCom."""
    from datetime import UTC, datetime

    from airflow.dag_processing.dagbag import DagBag

    from batchscore.local.demo import segments
    from batchscore.models.manifest import RegistryError
    from batchscore.models.registry import ModelRegistry
    from batchscore.pipeline.windows import Window
    from tests.conftest import WAREHOUSE_DAYS
    from tests.integration.helpers import model_input, window_rows

    registry = ModelRegistry(airflow_db.registry)
    try:
        manifest = registry.resolve("segments", "champion")
    except RegistryError:
        first = datetime.combine(WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS), datetime.min.time(), tzinfo=UTC)
        manifest = segments.train_and_register(
            airflow_db.warehouse_url, registry.root, train=Window(first, first + timedelta(days=1))
        )
    dag = DagBag(dag_folder=str(STACK.dags_dir)).dags["score_segments"]
    start, end = day_window(WAREHOUSE_END - timedelta(days=3))
    run = dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    assert run.state == "success"
    rows = window_rows(airflow_db.warehouse_url, start, end)
    expected = registry.load(manifest).predict(model_input(rows, list(manifest.feature_names))).astype(str)
    stored = stored_scores(airflow_db.scores_url, "scoring.customer_segments", start, end)
    assert len(stored) == len(rows) > 2_000
    assert list(stored.loc[rows["customer_id"], "label"]) == list(expected)
    assert stored["score"].isna().all()
    record = run_record(airflow_db.scores_url, "segments", run.run_id)
    assert record is not None
    assert (record["status"], record["rows_written"], record["model_sha256"]) == (
        "success",
        len(rows),
        manifest.sha256,
    )
    assert sum(record["score_summary"]["labels"].values()) == len(rows)
    assert record["score_summary"]["histogram"] is None


def test_dag_test_publishes_the_challengers_scores_with_the_champions(airflow_db: Services) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(STACK.dags_dir)).dags[f"score_{SHADOW}"]
    start, end = day_window(WAREHOUSE_END - timedelta(days=7))
    run = dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    assert run.state == "success"
    assert len(run.get_task_instances()) == 5, "plan, 3 mapped slices, publish"
    window = (airflow_db.warehouse_url, airflow_db.registry, start, end)
    champion, _ = expected_scores(*window)
    challenger, _ = expected_scores(*window, (CHALLENGER, "challenger"))
    stored = stored_scores(airflow_db.scores_url, SHADOW_TABLE, start, end)
    shadow = stored_scores(airflow_db.scores_url, f"{SHADOW_TABLE}_shadow", start, end)
    np.testing.assert_allclose(stored.loc[champion.index, "score"], champion["score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(shadow.loc[challenger.index, "score"], challenger["score"], rtol=0, atol=1e-12)
    assert set(shadow["run_id"]) == set(stored["run_id"]) == {run.run_id}
    assert set(shadow["model_name"]) == {CHALLENGER}
    record = run_record(airflow_db.scores_url, SHADOW, run.run_id)
    assert record is not None
    assert record["shadow"]["published"] is True
    assert record["shadow"]["rows_scored"] == len(challenger)
    assert 0.5 < record["shadow"]["label_agreement"] <= 1.0
