"""Alerts through Airflow's notifiers, received by a real SMTP server and a real HTTP server.

The DAGs run under dag.test(), whose task failure callbacks run as on a worker: a failed run, a
drift hold and a successful run each through the real DAG, the message read back as received.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import PIPELINES, STACK, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import REPO, run_record
from tests.receivers import HttpReceiver, SmtpReceiver

pytestmark = pytest.mark.airflow

EVENTS = ["failure", "drift_hold", "guard", "upstream_timeout", "deadline_missed"]
ALERTED = "churn_alerted"  # mail and webhook on every event
HELD = "churn_alerted_hold"  # the same, with a source whose spend moved past the drift threshold: held
UNREACHABLE = "churn_alerted_nowhere"  # receivers on ports nothing listens on


def _pipeline(name: str, *, notify: list[dict], query_change: tuple[str, str] | None = None, **extra: object) -> dict:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(name=name, output={"conn_id": "scores_db", "table": f"scoring.{name}_scores"}, notify=notify, **extra)
    data["execution"].update(retries=1, retry_delay_seconds=1)
    if query_change:
        data["source"]["query"] = data["source"]["query"].replace(*query_change)
    return data


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SmtpReceiver, HttpReceiver]]:
    smtp, http = SmtpReceiver().start(), HttpReceiver().start()
    yield smtp, http
    smtp.stop()
    http.stop()


SLACK_TOKEN_PATH = "/services/T0000/B0000/alertstoken"


@pytest.fixture(scope="module")
def slack() -> Iterator[HttpReceiver]:
    """A local HTTP server posing as Slack's incoming-webhook endpoint (it answers 200 "ok", as Slack does)."""
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def alert_dags(
    airflow_db: Services, receivers: tuple[SmtpReceiver, HttpReceiver], slack: HttpReceiver
) -> Iterator[dict]:
    """Three pipelines with ``notify:`` rules, their DAG files, and the connections to the receivers."""
    from airflow.dag_processing.dagbag import DagBag

    from batchscore.airflow.dag_files import dag_file_name, render
    from batchscore.local.embedded_pg import free_ports

    smtp, http = receivers
    closed_smtp, closed_http = free_ports(2)
    os.environ["AIRFLOW_CONN_ALERTS_SMTP"] = smtp.connection()
    os.environ["AIRFLOW_CONN_ALERTS_WEBHOOK"] = http.connection()
    # The Slack provider's connection, its host pointed at the local receiver; the password is the webhook's token path.
    os.environ["AIRFLOW_CONN_ALERTS_SLACK"] = json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.port}", "password": SLACK_TOKEN_PATH}
    )
    os.environ["AIRFLOW_CONN_NOWHERE_SMTP"] = smtp.connection().replace(str(smtp.port), str(closed_smtp))
    os.environ["AIRFLOW_CONN_NOWHERE_WEBHOOK"] = http.connection().replace(str(http.port), str(closed_http))
    to_receivers = [
        {"on": EVENTS, "via": "smtp", "conn_id": "alerts_smtp", "to": ["oncall@example.com"]},
        {"on": EVENTS, "via": "webhook", "conn_id": "alerts_webhook"},
        {"on": ["failure"], "via": "slack_webhook", "conn_id": "alerts_slack"},
    ]
    to_nowhere = [
        {"on": EVENTS, "via": "smtp", "conn_id": "nowhere_smtp", "to": ["oncall@example.com"]},
        {"on": EVENTS, "via": "webhook", "conn_id": "nowhere_webhook"},
    ]
    files = {
        ALERTED: _pipeline(ALERTED, notify=to_receivers),
        HELD: _pipeline(
            HELD,
            notify=to_receivers,
            query_change=("monthly_spend,", "monthly_spend * 3 AS monthly_spend,"),
            drift={"policy": "hold"},
        ),
        UNREACHABLE: _pipeline(UNREACHABLE, notify=to_nowhere),
    }
    written = []
    for name, data in files.items():
        # yaml.safe_dump writes the key `on` quoted, as a user must (or not: the config reads a bare `on` too)
        (PIPELINES / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        dag_file = STACK.dags_dir / dag_file_name(name)
        dag_file.write_text(render(name))
        written += [PIPELINES / f"{name}.yaml", dag_file]
    bag = DagBag(dag_folder=str(STACK.dags_dir))
    yield {name: bag.dags[f"score_{name}"] for name in files}
    for path in written:
        path.unlink(missing_ok=True)
    for name in ("ALERTS_SMTP", "ALERTS_WEBHOOK", "ALERTS_SLACK", "NOWHERE_SMTP", "NOWHERE_WEBHOOK"):
        os.environ.pop(f"AIRFLOW_CONN_{name}", None)


def _conf(days_back: int) -> dict[str, str]:
    start, end = day_window(WAREHOUSE_END - timedelta(days=days_back))
    return {"window_start": start.isoformat(), "window_end": end.isoformat()}


def test_a_failed_run_sends_one_mail_and_one_webhook_with_its_cause_and_links(alert_dags, receivers) -> None:
    smtp, http = receivers
    start, _end = day_window(WAREHOUSE_END - timedelta(days=2))
    backwards = {"window_start": start.isoformat(), "window_end": (start - timedelta(days=1)).isoformat()}
    run = alert_dags[ALERTED].test(run_conf=backwards)
    assert run.state == "failed"
    mails = smtp.mails_about(run.run_id)
    assert len(mails) == 1, "exactly one mail for the failed run"
    mail = mails[0]
    assert mail.recipients == ["oncall@example.com"]
    assert mail.sender == "batchscore@example.com"
    assert mail.subject == f"[batchscore] {ALERTED}: run failed for (window not resolved)"
    body = mail.body
    assert f"{ALERTED} (DAG score_{ALERTED}, run {run.run_id})" in body
    assert "<th align='left'>Stage</th><td>plan</td>" in body
    assert f"WindowError: window start {start.isoformat()} must be before end" in body
    assert "/scoring/run?pipeline=churn_alerted&amp;run_id=" in body
    assert f"/dags/score_{ALERTED}/runs/" in body
    assert "/tasks/plan" in body

    hooks = http.bodies_about(run.run_id)
    assert len(hooks) == 1
    hook = hooks[0]
    record = run_record(STACK.database_url("scores"), ALERTED, run.run_id)
    assert record is not None
    assert (hook["event"], hook["pipeline"], hook["stage"], hook["window"]) == ("failure", ALERTED, "plan", None)
    assert hook["cause"] == record["error"]
    assert hook["remedy"] == record["remedy"]
    assert hook["run_page"].endswith(f"/scoring/run?pipeline={ALERTED}&run_id={quote(run.run_id, safe='')}")
    assert hook["task_log"].split("?")[0].endswith("/tasks/plan")
    assert http.paths[-1] == "/alerts"
    assert record["alerts_sent"] == ["failure"]


def test_a_failed_run_posts_one_slack_message_through_the_slack_provider(alert_dags, slack) -> None:
    start, _end = day_window(WAREHOUSE_END - timedelta(days=6))
    backwards = {"window_start": start.isoformat(), "window_end": (start - timedelta(days=1)).isoformat()}
    run = alert_dags[ALERTED].test(run_conf=backwards)
    assert run.state == "failed"
    (message,) = slack.bodies_about(run.run_id)
    assert slack.paths[slack.bodies.index(message)] == SLACK_TOKEN_PATH
    text = message["text"]
    assert text.startswith(f"[batchscore] {ALERTED}: run failed for (window not resolved)\n")
    assert f"Pipeline: {ALERTED} (DAG score_{ALERTED}, run {run.run_id})" in text
    assert "Stage: plan" in text
    assert f"Cause: WindowError: window start {start.isoformat()} must be before end" in text
    assert "Remedy: " in text
    assert f"/scoring/run?pipeline={ALERTED}&amp;run_id=" in text  # & escaped for Slack's mrkdwn
    assert "/tasks/plan" in text


def test_a_drift_hold_sends_its_own_message_naming_the_window(alert_dags, receivers) -> None:
    smtp, http = receivers
    conf = _conf(3)
    run = alert_dags[HELD].test(run_conf=conf)
    assert run.state == "failed"
    record = run_record(STACK.database_url("scores"), HELD, run.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"], record["drift_status"]) == ("failed", "publish", "held")
    mails = smtp.mails_about(run.run_id)
    assert len(mails) == 1
    assert (
        mails[0].subject
        == f"[batchscore] {HELD}: publish held by drift for [{conf['window_start']}, {conf['window_end']})"
    )
    assert "DriftHeld" in mails[0].body
    assert "monthly_spend" in mails[0].body
    hooks = http.bodies_about(run.run_id)
    assert len(hooks) == 1
    assert hooks[0]["event"] == "drift_hold"
    assert hooks[0]["stage"] == "publish"
    assert hooks[0]["window"] == {"start": conf["window_start"], "end": conf["window_end"]}
    assert hooks[0]["cause"] == record["error"]
    assert hooks[0]["remedy"] == record["remedy"]
    assert "drift" in hooks[0]["remedy"]
    assert record["alerts_sent"] == ["drift_hold"]


def test_a_successful_run_sends_nothing(alert_dags, receivers) -> None:
    smtp, http = receivers
    mails_before, hooks_before = len(smtp._handler.mails), len(http.bodies)
    run = alert_dags[ALERTED].test(run_conf=_conf(4))
    assert run.state == "success"
    assert smtp.mails_about(run.run_id) == []
    assert http.bodies_about(run.run_id) == []
    assert (len(smtp._handler.mails), len(http.bodies)) == (mails_before, hooks_before)
    record = run_record(STACK.database_url("scores"), ALERTED, run.run_id)
    assert record is not None
    assert record["status"] == "success"
    assert record["alerts_sent"] is None


def test_unreachable_receivers_leave_the_runs_state_as_it_was(alert_dags, receivers) -> None:
    """A failed run stays failed once (no extra retry, same record); a good run stays a success."""
    failed = alert_dags[UNREACHABLE].test(
        run_conf={"window_start": "2026-10-20T00:00:00Z", "window_end": "2026-10-19T00:00:00Z"}
    )
    assert failed.state == "failed"
    plan = failed.get_task_instance("plan")
    assert plan is not None
    assert (plan.state, plan.try_number) == ("failed", 1)
    record = run_record(STACK.database_url("scores"), UNREACHABLE, failed.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "plan")
    assert record["alerts_sent"] == ["failure"], "claimed once, even though nothing could deliver it"

    good = alert_dags[UNREACHABLE].test(run_conf=_conf(5))
    assert good.state == "success"
