"""Deadlines on the running stack: ``sla.land_by`` as Airflow's deadline alert, fired by the real triggerer.

One pipeline whose ``land_by`` is a few seconds ahead (set when the test starts, in UTC with
seconds), with ``notify:`` rules to a real SMTP server, a JSON webhook and a local HTTP server
posing as Slack's incoming-webhook endpoint (the Slack provider's connection pointed at it). Two
runs: one held waiting for upstream data that never lands misses its deadline (one mail, one
webhook body, one Slack message, and ``deadline_missed_at`` on its record); one that publishes
in time has its deadline removed by Airflow and sends nothing.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
import yaml

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import PIPELINES, STACK, Services
from tests.integration.helpers import REPO, run_record
from tests.receivers import HttpReceiver, SmtpReceiver, wait_for

pytestmark = pytest.mark.e2e

PIPELINE = "churn_deadline_e2e"
DAG = f"score_{PIPELINE}"
TABLE = f"scoring.{PIPELINE}_scores"
CHECK = "SELECT count(*) > 0 FROM test_deadline_e2e.load_log WHERE day_start = :window_start AND day_end = :window_end"
SLACK_PATH = "/services/T0000/B0000/e2etoken"
# land_by this far after the file is written: the DAG is parsed (a new or rewritten DAG file is
# parsed first: 2 s after the write, measured at load average 11), both runs are triggered, and the
# in-time run (an empty window: four task processes, each importing the engine) publishes before
# it: 61 s from trigger to success at that load, so SPARE keeps the 90 s it always had.
LEAD = timedelta(seconds=100)
SPARE = timedelta(seconds=90)  # at least this much left once the DAG is parsed, else due again later
QUIET = 10.0  # seconds after the first alert in which no second one may arrive


@dataclass(frozen=True)
class Armed:
    due: datetime
    waiting: str  # a run whose upstream never lands
    in_time: str  # a run that publishes before the deadline
    waiting_window: tuple[datetime, datetime]


@pytest.fixture(scope="module")
def receivers(client: AirflowClient) -> Iterator[tuple[SmtpReceiver, HttpReceiver, HttpReceiver]]:
    smtp, hook, slack = SmtpReceiver().start(), HttpReceiver().start(), HttpReceiver().start()
    connections = {
        "deadline_smtp": json.loads(smtp.connection()),
        "deadline_webhook": json.loads(hook.connection()),
        "deadline_slack": {
            "conn_type": "slackwebhook",
            "host": f"http://127.0.0.1:{slack.port}",
            "password": SLACK_PATH,
        },
    }
    for conn_id, conn in connections.items():
        extra = conn.pop("extra", None)
        body = {"connection_id": conn_id, **conn, **({"extra": json.dumps(extra)} if extra else {})}
        client.send("POST", "/connections", body)
    yield smtp, hook, slack
    for conn_id in connections:
        client.session.delete(f"{client.base}/api/v2/connections/{conn_id}", timeout=30)
    smtp.stop()
    hook.stop()
    slack.stop()


def _write_pipeline(due: datetime) -> None:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(
        name=PIPELINE,
        description=f"deadline e2e, due {due.isoformat()}",  # tells the test which version Airflow parsed
        output={"conn_id": "scores_db", "table": TABLE},
        sla={"land_by": f"{due:%H:%M:%S}", "timezone": "UTC"},
        notify=[
            {"on": ["deadline_missed"], "via": "smtp", "conn_id": "deadline_smtp", "to": ["oncall@example.com"]},
            {"on": ["deadline_missed"], "via": "webhook", "conn_id": "deadline_webhook"},
            {"on": ["deadline_missed"], "via": "slack_webhook", "conn_id": "deadline_slack"},
        ],
    )
    data["source"].update(ready_when=CHECK, poke_interval_seconds=5, ready_timeout_minutes=5)
    data["execution"].update(retries=0, max_active_runs=3)
    (PIPELINES / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _parsed(client: AirflowClient, due: datetime) -> bool:
    try:
        return bool(client.get(f"/dags/{DAG}")["description"] == f"deadline e2e, due {due.isoformat()}")
    except Exception:
        return False


def _deadlines(client: AirflowClient, run_id: str) -> list[dict]:
    reply = client.session.get(f"{client.base}/ui/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/deadlines", timeout=30)
    reply.raise_for_status()
    return list(reply.json()["deadlines"])


def _trigger(client: AirflowClient, start: datetime, end: datetime, **conf: object) -> str:
    body = {"logical_date": None, "conf": {"window_start": start.isoformat(), "window_end": end.isoformat(), **conf}}
    return str(client.send("POST", f"/dags/{DAG}/dagRuns", body)["dag_run_id"])


@pytest.fixture(scope="module")
def armed(client: AirflowClient, airflow_db: Services, receivers: object) -> Iterator[Armed]:
    """The pipeline due a little ahead, parsed, and its two runs triggered (windows that ended in the last hours)."""
    from batchscore.airflow.dag_files import dag_file_name, render

    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS test_deadline_e2e")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_deadline_e2e.load_log (day_start timestamptz, day_end timestamptz)"
        )
    dag_file = STACK.dags_dir / dag_file_name(PIPELINE)
    for attempt in range(1, 4):  # a slow parse leaves too little time: due again, later
        due = (datetime.now(UTC) + LEAD * attempt).replace(microsecond=0)
        _write_pipeline(due)
        # Written (again) after its pipeline file: a new or changed DAG file is parsed at once; an
        # unchanged one only at the next periodic re-parse, which knows nothing of the YAML.
        dag_file.write_text(render(PIPELINE))
        wait_for(lambda due=due: _parsed(client, due), timeout=240)
        if due - datetime.now(UTC) > SPARE:
            break
    else:
        raise TimeoutError(f"the DAG was never parsed {SPARE} before its deadline")
    client.send("PATCH", f"/dags/{DAG}", {"is_paused": False})
    # Windows that ended earlier today: due at today's land_by. The in-time window's upstream has
    # landed and it holds no rows (no warehouse data this recent), so it publishes an empty window.
    end = due.replace(minute=0, second=0) - timedelta(hours=1)
    waiting_window = (end - timedelta(days=1), end)
    in_time_window = (end - timedelta(days=1, hours=1), end - timedelta(hours=1))
    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("INSERT INTO test_deadline_e2e.load_log VALUES (%s, %s)", in_time_window)
    waiting = _trigger(client, *waiting_window)
    in_time = _trigger(client, *in_time_window, allow_shrink=True)
    yield Armed(due, waiting, in_time, waiting_window)
    for run_id in (waiting, in_time):  # free the triggerer: the waiting run would poll until its timeout
        with contextlib.suppress(RuntimeError):  # finished already
            client.send("PATCH", f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}", {"state": "failed"})
    client.send("PATCH", f"/dags/{DAG}", {"is_paused": True})
    dag_file.unlink(missing_ok=True)
    (PIPELINES / f"{PIPELINE}.yaml").unlink(missing_ok=True)


def test_a_run_held_waiting_past_its_deadline_notifies_once_and_records_the_miss(
    client: AirflowClient,
    airflow_db: Services,
    receivers: tuple[SmtpReceiver, HttpReceiver, HttpReceiver],
    armed: Armed,
) -> None:
    smtp, hook, slack = receivers
    (deadline,) = _deadlines(client, armed.waiting)
    assert datetime.fromisoformat(deadline["deadline_time"]) == armed.due
    assert deadline["alert_name"] == f"scores of {PIPELINE} due by {armed.due:%H:%M:%S} UTC"
    assert datetime.now(UTC) < armed.due, "the run is still waiting before its deadline"
    assert smtp.mails_about(armed.waiting) == []

    assert wait_for(lambda: smtp.mails_about(armed.waiting), timeout=180), "no mail after the deadline"
    first_alert = time.monotonic()
    assert wait_for(lambda: hook.bodies_about(armed.waiting) and slack.bodies_about(armed.waiting), timeout=60)
    assert client.get(f"/dags/{DAG}/dagRuns/{quote(armed.waiting, safe='')}")["state"] == "running"
    wait_ti = client.get(f"/dags/{DAG}/dagRuns/{quote(armed.waiting, safe='')}/taskInstances/wait_for_upstream")
    assert wait_ti["state"] == "deferred", "still waiting for its upstream when the deadline fired"
    assert _deadlines(client, armed.waiting)[0]["missed"] is True

    start, end = armed.waiting_window
    window = f"[{start.isoformat()}, {end.isoformat()})"
    (mail,) = smtp.mails_about(armed.waiting)
    assert mail.recipients == ["oncall@example.com"]
    assert mail.subject == f"[batchscore] {PIPELINE}: scores not landed by the deadline for {window}"
    body = mail.body
    assert f"{PIPELINE} (DAG {DAG}, run {armed.waiting})" in body
    assert f"<th align='left'>Window</th><td>{window}</td>" in body
    assert "<th align='left'>Stage</th><td>wait_for_upstream</td>" in body
    cause = (
        f"scores for {window} not published by {armed.due:%Y-%m-%d %H:%M:%S} UTC (sla.land_by {armed.due:%H:%M:%S} UTC)"
    )
    assert cause in body
    assert "the upstream data has not landed" in body
    assert f"/scoring/run?pipeline={PIPELINE}&amp;run_id=" in body
    assert f"/dags/{DAG}/runs/{quote(armed.waiting, safe='')}/tasks/wait_for_upstream" in body

    (posted,) = hook.bodies_about(armed.waiting)
    assert (posted["event"], posted["pipeline"], posted["run_id"], posted["stage"]) == (
        "deadline_missed",
        PIPELINE,
        armed.waiting,
        "wait_for_upstream",
    )
    assert posted["window"] == {"start": start.isoformat(), "end": end.isoformat()}
    assert posted["cause"].startswith(cause)
    assert posted["run_page"].endswith(f"/scoring/run?pipeline={PIPELINE}&run_id={quote(armed.waiting, safe='')}")

    (message,) = slack.bodies_about(armed.waiting)
    assert slack.paths[slack.bodies.index(message)] == SLACK_PATH
    assert message["text"].startswith(f"[batchscore] {PIPELINE}: scores not landed by the deadline for {window}")
    assert f"Cause: {cause}" in message["text"]

    record = run_record(airflow_db.scores_url, PIPELINE, armed.waiting)
    assert record is not None
    assert (record["status"], record["window_start"], record["window_end"]) == ("running", start, end)
    assert armed.due <= record["deadline_missed_at"] < armed.due + timedelta(minutes=3)
    assert record["alerts_sent"] == ["deadline_missed"]
    time.sleep(max(0.0, QUIET - (time.monotonic() - first_alert)))  # nothing more arrives: once per run
    assert (len(smtp.mails_about(armed.waiting)), len(hook.bodies_about(armed.waiting))) == (1, 1)


def test_a_run_that_publishes_in_time_sends_nothing(
    client: AirflowClient,
    airflow_db: Services,
    receivers: tuple[SmtpReceiver, HttpReceiver, HttpReceiver],
    armed: Armed,
) -> None:
    smtp, hook, slack = receivers
    run = client.wait_for_runs(DAG, {armed.in_time}, timeout=300, allow_failed=True)[0]
    assert run["state"] == "success", run_record(airflow_db.scores_url, PIPELINE, armed.in_time)
    assert datetime.fromisoformat(run["end_date"]) < armed.due, "the run finished before its deadline"
    assert _deadlines(client, armed.in_time) == [], "Airflow removes the deadline of a run that succeeded in time"
    assert wait_for(lambda: datetime.now(UTC) > armed.due + timedelta(seconds=20), timeout=200)
    assert wait_for(lambda: smtp.mails_about(armed.waiting), timeout=120), "the other run's alert went out meanwhile"
    assert smtp.mails_about(armed.in_time) == []
    assert hook.bodies_about(armed.in_time) == []
    assert slack.bodies_about(armed.in_time) == []
    record = run_record(airflow_db.scores_url, PIPELINE, armed.in_time)
    assert record is not None
    assert (record["status"], record["deadline_missed_at"], record["alerts_sent"]) == ("success", None, None)
