"""Alert messages: the event from the error, every field present, nothing rendered or unescaped."""

from __future__ import annotations

from datetime import UTC, datetime

from batchscore.pipeline.windows import Window, WindowError
from batchscore.run.alerts import event_of, failure_alert
from batchscore.sink.publish import DriftHeld, RejectThresholdExceeded
from batchscore.sink.volume_guard import VolumeGuardHeld

WINDOW = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))


def test_the_event_is_the_errors_alert_event_through_wrappers() -> None:
    wrapped = RuntimeError("fail now")
    wrapped.__cause__ = DriftHeld("monthly_spend PSI 2.1 > 0.25")  # as failing_fast raises it
    assert event_of(wrapped) == "drift_hold"
    assert event_of(VolumeGuardHeld("12 rows, the guard's floor is 2,400")) == "guard"
    assert event_of(RejectThresholdExceeded("too many")) == "failure"
    assert event_of(ConnectionError("reset")) == "failure"
    assert event_of("killed") == "failure"


def test_the_message_names_pipeline_window_stage_cause_remedy_and_links() -> None:
    alert = failure_alert(
        pipeline="churn",
        dag_id="score_churn",
        run_id="scheduled__2026-11-02",
        error=DriftHeld("<b>{{ 7 * 7 }}</b> & more"),
        stage="publish",
        window=WINDOW,
        run_page="http://airflow/scoring/run?pipeline=churn&run_id=x",
        task_log="http://airflow/dags/score_churn/runs/x/tasks/publish",
    )
    assert (
        alert.subject
        == "[batchscore] churn: publish held by drift for [2026-11-01T00:00:00+00:00, 2026-11-02T00:00:00+00:00)"
    )
    assert alert.cause == "DriftHeld: <b>{{ 7 * 7 }}</b> & more"
    assert alert.remedy == DriftHeld.remedy
    text = alert.text()
    assert "Stage: publish" in text
    assert "Task log: http://airflow/dags/score_churn/runs/x/tasks/publish" in text
    body = alert.html()
    assert "&lt;b&gt;{{ 7 * 7 }}&lt;/b&gt; &amp; more" in body
    assert "<b>" not in body
    assert "href='http://airflow/scoring/run?pipeline=churn&amp;run_id=x'" in body
    data = alert.to_json()
    assert data["window"] == {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00"}
    assert (data["event"], data["stage"], data["run_id"]) == ("drift_hold", "publish", "scheduled__2026-11-02")


def test_a_plan_failure_without_a_window_says_so() -> None:
    alert = failure_alert(
        pipeline="churn",
        dag_id="score_churn",
        run_id="manual__1",
        error=WindowError("window start a must be before end b"),
        stage="plan",
        window=None,
        run_page="p",
        task_log=None,
    )
    assert alert.event == "failure"
    assert alert.subject.endswith("run failed for (window not resolved)")
    assert "Task log" not in alert.text()
    assert alert.to_json()["window"] is None
