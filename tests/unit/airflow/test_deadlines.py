"""The DAG's deadline alert: which runs get a deadline, when it is due, and how it round-trips through serialization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from batchscore.airflow.deadlines import RunWindow, ScoresDue, _run_window, deadline_for
from batchscore.pipeline.config import parse_config
from batchscore.pipeline.windows import Window
from batchscore.run.alerts import deadline_alert

REPO = Path(__file__).resolve().parents[3]
PARIS_SIX = ScoresDue(land_by="06:00", sla_timezone="Europe/Paris", schedule="0 0 * * *", timezone="UTC")
NOW = datetime(2026, 1, 15, 3, tzinfo=UTC)


def churn(**extra: object):
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(extra)
    return parse_config(data, Path("include/pipelines/churn.yaml"))


def run(run_type: str, *, interval: tuple[datetime, datetime] | None = None, conf: dict | None = None) -> RunWindow:
    start, end = interval or (None, None)
    return RunWindow(run_type, datetime(2026, 1, 15, 0, 0, 5, tzinfo=UTC), start, end, conf or {})


def test_a_scheduled_nightly_run_is_due_at_six_paris_time_the_morning_after() -> None:
    day = (datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))
    assert PARIS_SIX.due(run("scheduled", interval=day), now=NOW) == datetime(2026, 1, 15, 5, tzinfo=UTC)


def test_a_scheduled_run_created_after_its_due_time_still_gets_its_deadline() -> None:
    day = (datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))
    late = datetime(2026, 1, 15, 9, tzinfo=UTC)  # the scheduler was down all night: the scores are late
    assert PARIS_SIX.due(run("scheduled", interval=day), now=late) == datetime(2026, 1, 15, 5, tzinfo=UTC)


def test_a_manual_run_without_a_logical_date_is_due_after_the_last_complete_interval() -> None:
    assert PARIS_SIX.window(run("manual")) == Window(
        datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC)
    )
    assert PARIS_SIX.due(run("manual"), now=NOW) == datetime(2026, 1, 15, 5, tzinfo=UTC)


def test_a_manual_run_takes_the_trigger_forms_window() -> None:
    conf = {"window_start": "2026-01-13T00:00:00+00:00", "window_end": "2026-01-14T00:00:00+00:00"}
    assert PARIS_SIX.due(run("manual", conf=conf), now=datetime(2026, 1, 14, 1, tzinfo=UTC)) == datetime(
        2026, 1, 14, 5, tzinfo=UTC
    )


def test_a_manual_run_of_a_window_already_due_gets_no_deadline() -> None:
    conf = {"window_start": "2026-01-10T00:00:00+00:00", "window_end": "2026-01-11T00:00:00+00:00"}
    assert PARIS_SIX.due(run("manual", conf=conf), now=NOW) is None


@pytest.mark.parametrize("run_type", ["backfill", "asset_triggered", "asset_materialization"])
def test_backfill_and_asset_triggered_runs_get_no_deadline(run_type: str) -> None:
    day = (datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))
    assert PARIS_SIX.due(run(run_type, interval=day), now=NOW) is None


def test_the_reference_never_raises_into_the_scheduler() -> None:
    class Broken:
        def execute(self, *args: object) -> object:
            raise RuntimeError("metadata database went away")

    assert PARIS_SIX._evaluate_with(session=Broken(), dag_id="score_churn", run_id="r") is None


def test_the_dag_gets_the_alert_only_with_an_sla_and_it_survives_serialization() -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    from batchscore.airflow.dag_factory import build_dag

    assert deadline_for(churn()) is None
    config = churn(sla={"land_by": "06:00", "timezone": "Europe/Paris"}, timezone="Europe/London")
    alert = deadline_for(config)
    assert alert is not None
    assert (alert.reference, alert.interval) == (
        ScoresDue("06:00", "Europe/Paris", config.schedule, "Europe/London", config.execution.max_window_days),
        timedelta(0),
    )
    assert (alert.callback.path, alert.callback.kwargs) == (
        "batchscore.airflow.deadlines.on_deadline_missed",
        {"pipeline": "churn"},
    )
    encoded = DagSerialization.to_dict(build_dag(config))["dag"]["deadline"]
    (reference,) = [d["reference"] for d in encoded]
    assert reference == {
        "reference_type": "ScoresDue",
        "land_by": "06:00",
        "sla_timezone": "Europe/Paris",
        "schedule": config.schedule,
        "timezone": "Europe/London",
        "max_window_days": config.execution.max_window_days,
        "__class_path": "batchscore.airflow.deadlines.ScoresDue",
    }
    assert ScoresDue.deserialize_reference(reference) == alert.reference


def test_the_sla_zone_defaults_to_the_pipelines() -> None:
    alert = deadline_for(churn(sla={"land_by": "07:30"}, timezone="America/New_York"))
    assert alert is not None
    assert alert.reference.sla_timezone == "America/New_York"  # type: ignore[attr-defined]


def test_the_callbacks_context_gives_the_runs_window() -> None:
    dag_run = {
        "dag_run_id": "manual__x",
        "run_type": "manual",
        "run_after": "2026-01-15T00:00:05Z",
        "data_interval_start": None,
        "data_interval_end": None,
        "conf": {"window_start": "2026-01-13T00:00:00Z", "window_end": "2026-01-14T00:00:00Z"},
        "state": "running",
    }
    assert PARIS_SIX.window(_run_window(dag_run)) == Window(
        datetime(2026, 1, 13, tzinfo=UTC), datetime(2026, 1, 14, tzinfo=UTC)
    )


def test_the_deadline_message_names_the_window_the_due_time_the_stage_and_the_remedy() -> None:
    window = Window(datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))
    alert = deadline_alert(
        pipeline="churn",
        dag_id="score_churn",
        run_id="scheduled__2026-01-14",
        window=window,
        due=datetime(2026, 1, 15, 5, tzinfo=UTC),
        land_by="06:00",
        zone="Europe/Paris",
        run_state="running",
        record_status=None,
        stage="wait_for_upstream",
        run_page="http://ui/scoring/run?pipeline=churn&run_id=scheduled__2026-01-14",
        task_log="http://ui/dags/score_churn/runs/scheduled__2026-01-14/tasks/wait_for_upstream",
    )
    assert alert.subject == f"[batchscore] churn: scores not landed by the deadline for {window}"
    assert alert.cause == (
        f"scores for {window} not published by 2026-01-15 06:00:00 CET (sla.land_by 06:00 Europe/Paris); "
        "the Airflow run is running"
    )
    assert alert.remedy.startswith("the upstream data has not landed")
    text = alert.text()
    assert "Stage: wait_for_upstream" in text
    assert "Task log: http://ui/dags/score_churn/runs/scheduled__2026-01-14/tasks/wait_for_upstream" in text
