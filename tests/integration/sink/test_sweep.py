"""The sweep of unpublished slice tables: old ones of finished runs go (recorded), a live run's never do."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.publish import SliceResult
from batchscore.sink.run_record import run_events
from batchscore.sink.sweep import sweep_unpublished
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import REPO, churn_config, expected_scores, run_record, stored_scores

pytestmark = pytest.mark.integration
PIPELINE = "churn_sweep"
TABLE = f"scoring.{PIPELINE}_scores"


def _window(n: int) -> Window:
    return Window(*day_window(WAREHOUSE_END - timedelta(days=n)))


def _config() -> PipelineConfig:
    base = churn_config()
    return base.model_copy(update={"name": PIPELINE, "output": base.output.model_copy(update={"table": TABLE})})


def _endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def _left_behind(services: Services, run_id: str, *, status: str, age: timedelta) -> SliceResult:
    """A slice scored and never published, its run recorded as ``status``, made ``age`` ago."""
    plan = plan_run(_config(), _endpoints(services), window=_window(3), run_id=run_id)
    result = score_slice(_config(), _endpoints(services), plan, plan.key_slices[0])
    with psycopg.connect(services.scores_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE scoring.lineage SET created_at = now() - %s WHERE lineage_id = %s", (age, result.lineage_id)
        )
        conn.execute(
            "UPDATE scoring.scoring_runs SET status = %s WHERE pipeline = %s AND run_id = %s",
            (status, PIPELINE, run_id),
        )
    return result


def _exists(services: Services, piece: SliceResult) -> tuple[bool, bool, bool]:
    """(scores table, rejects table, lineage row) of a slice, each there or not."""
    with psycopg.connect(services.scores_url) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL, "
            "EXISTS (SELECT 1 FROM scoring.lineage WHERE lineage_id = %s)",
            (f"{piece.schema}.{piece.table}", f"{piece.schema}.{piece.rejects_table}", piece.lineage_id),
        ).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1]), bool(row[2])


def test_publish_sweeps_old_unpublished_slices_of_finished_runs_and_never_a_live_runs(services: Services) -> None:
    old_failed = _left_behind(services, "it__sweep_old_failed", status="failed", age=timedelta(hours=30))
    old_success = _left_behind(services, "it__sweep_old_cleared", status="success", age=timedelta(hours=25))
    live = _left_behind(services, "it__sweep_live", status="running", age=timedelta(days=3))
    young = _left_behind(services, "it__sweep_young", status="failed", age=timedelta(hours=2))

    run_pipeline(_config(), _endpoints(services), window=_window(4), run_id="it__sweep_publisher")

    assert _exists(services, old_failed) == (False, False, False)
    assert _exists(services, old_success) == (False, False, False)
    assert _exists(services, live) == (True, True, True), "a live run's slice is never swept"
    assert _exists(services, young) == (True, True, True), "younger than sweep_after_hours"
    (event,) = run_events(services.scores_url, pipeline=PIPELINE, run_id="it__sweep_old_failed")[-1:]
    assert (event["stage"], event["event"]) == ("sweep", "swept")
    assert event["detail"].startswith(f"{old_failed.schema}.{old_failed.table}: slice 0 of window [")
    assert "never published (run failed; about" in event["detail"]
    assert "dropped by the publish of run it__sweep_publisher (older than 1 day, 0:00:00)" in event["detail"]
    assert run_record(services.scores_url, PIPELINE, "it__sweep_publisher")["status"] == "success"  # type: ignore[index]


def test_a_slice_table_held_by_a_session_is_left_for_the_next_sweep(services: Services) -> None:
    held = _left_behind(services, "it__sweep_held", status="failed", age=timedelta(hours=48))
    with psycopg.connect(services.scores_url) as reader:
        reader.execute(f'SELECT count(*) FROM {held.schema}."{held.table}"').fetchone()
        swept = sweep_unpublished(services.scores_url, pipeline=PIPELINE, older_than=timedelta(hours=24), by="the test")
        reader.rollback()
    assert f"{held.schema}.{held.table}" in swept.busy
    assert _exists(services, held) == (True, True, True)
    again = sweep_unpublished(services.scores_url, pipeline=PIPELINE, older_than=timedelta(hours=24), by="the test")
    assert f"{held.schema}.{held.table}" in again.dropped


def test_a_publish_that_needs_a_swept_slice_scores_it_again(services: Services) -> None:
    """A slice task cleared without its downstream long ago, swept, then its publish cleared: it converges."""
    window = _window(5)
    plan = plan_run(_config(), _endpoints(services), window=window, run_id="it__sweep_needed")
    results = [score_slice(_config(), _endpoints(services), plan, s) for s in plan.key_slices]
    with psycopg.connect(services.scores_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE scoring.lineage SET created_at = now() - interval '2 days' WHERE lineage_id = %s",
            (results[0].lineage_id,),
        )
        conn.execute(
            "UPDATE scoring.scoring_runs SET status = 'failed' WHERE pipeline = %s AND run_id = %s",
            (PIPELINE, plan.run_id),
        )
    sweep_unpublished(services.scores_url, pipeline=PIPELINE, older_than=timedelta(hours=24), by="the test")
    assert _exists(services, results[0]) == (False, False, False)

    published = publish_run(_config(), _endpoints(services), plan, results)
    expected, _ = expected_scores(services.warehouse_url, services.registry, window.start, window.end)
    stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
    assert published.rows_written == len(stored) == len(expected)
    assert set(stored["run_id"]) == {"it__sweep_needed"}
    assert "slices scored again" in [e["event"] for e in run_events(services.scores_url, pipeline=PIPELINE)]


def test_the_sweep_command_uses_the_pipelines_age_or_the_one_given(
    services: Services, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import yaml

    from batchscore.cli.main import main

    folder = tmp_path / "pipelines"
    folder.mkdir()
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(name=PIPELINE, output={"conn_id": "scores_db", "table": TABLE})
    (folder / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BATCHSCORE_PIPELINES_DIR", str(folder))
    piece = _left_behind(services, "it__sweep_cli", status="failed", age=timedelta(hours=5))
    assert main(["tables", "sweep", "--pipeline", PIPELINE, "--scores-url", services.scores_url]) == 0
    assert "0 unpublished slice table(s) older than 24 h dropped" in capsys.readouterr().out
    args = ["tables", "sweep", "--pipeline", PIPELINE, "--older-than-hours", "4", "--scores-url", services.scores_url]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"dropped {piece.schema}.{piece.table}" in out
    assert _exists(services, piece) == (False, False, False)
