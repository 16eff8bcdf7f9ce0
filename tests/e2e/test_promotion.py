"""Promotion through Airflow's approval: the request carries the evidence, and only an approval moves the alias."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchscore.local.airflow_client import AirflowClient
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import load_config
from batchscore.pipeline.windows import Window
from batchscore.run.evaluation import evaluate_window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from batchscore.sink.performance import decisions
from tests.conftest import (
    PIPELINES,
    PROMO,
    PROMO_EXPIRY,
    REVIEWER,
    REVIEWER_PASSWORD,
    TRAIN_WINDOW_DAYS,
    WAREHOUSE_DAYS,
    WAREHOUSE_END,
    Services,
    day_window,
)

pytestmark = pytest.mark.e2e
WINDOWS = [Window(*day_window(WAREHOUSE_END - timedelta(days=d))) for d in (7, 6)]
HITL = "/dags/{dag}/dagRuns/{run}/taskInstances/approve/-1/hitlDetails"
ANSWER_AFTER_SECONDS = 8  # 5 s still met the race at load average 9


@pytest.fixture(scope="module")
def evaluated(airflow_db: Services, client: AirflowClient) -> dict[str, int]:
    """churn_promo v1 champion, v2 challenger; two windows of each promotion pipeline scored and evaluated."""
    from batchscore.local.demo.model import train_and_register

    first = datetime.combine(WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS), datetime.min.time(), tzinfo=UTC)
    train = Window(first, first + timedelta(days=TRAIN_WINDOW_DAYS))
    champion = train_and_register(airflow_db.warehouse_url, airflow_db.registry, train=train, name=PROMO, max_iter=30)
    challenger = train_and_register(
        airflow_db.warehouse_url, airflow_db.registry, train=train, name=PROMO, max_iter=5, aliases=("challenger",)
    )
    ends = Endpoints(airflow_db.warehouse_url, airflow_db.scores_url, airflow_db.registry)
    for name in (PROMO, PROMO_EXPIRY):
        config = load_config(PIPELINES / f"{name}.yaml")
        for window in WINDOWS:
            run_pipeline(config, ends, window=window, run_id=f"e2e__{name}_{window.slug}")
            result = evaluate_window(config, ends, window, run_id="e2e__eval", now=datetime(2030, 1, 1, tzinfo=UTC))
            assert result.status == "evaluated"
        client.wait_for_dag(f"promote_{name}", timeout=240)
        client.send("PATCH", f"/dags/promote_{name}", {"is_paused": False})
    return {"champion": champion.version, "challenger": challenger.version}


def request(client: AirflowClient, dag_id: str, timeout: float = 300) -> tuple[str, dict[str, Any]]:
    """Trigger ``dag_id`` and wait until its approval request is open; (run id, the request's details)."""
    run_id = str(client.send("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            detail = client.get(HITL.format(dag=dag_id, run=run_id))
        except Exception:  # not asked yet: the evidence is still being gathered
            detail = None
        if detail and detail.get("task_instance", {}).get("state") in ("awaiting_input", "deferred"):
            # As a person would, answer seconds after the request opens, not within its first one. An
            # answer before the scheduler has taken in the deferring process's exit (Airflow 3.3.2)
            # resumes the task so fast that the scheduler then sees "executor says success, task is
            # queued" and marks the task failed (scheduler_job_runner), whatever was chosen.
            time.sleep(ANSWER_AFTER_SECONDS)
            return run_id, detail
        time.sleep(3)  # not shorter: a request seen sooner is answered sooner (see above)
    raise TimeoutError(f"{dag_id} run {run_id} asked for no approval within {timeout:.0f}s")


def answer(airflow_db: Services, dag_id: str, run_id: str, option: str) -> dict[str, Any]:
    """Answer the request through the REST API as the reviewer (not the admin)."""
    reviewer = AirflowClient(f"http://127.0.0.1:{airflow_db.stack.api_port}", REVIEWER, REVIEWER_PASSWORD)
    return reviewer.send("PATCH", HITL.format(dag=dag_id, run=run_id), {"chosen_options": [option], "params_input": {}})


def decision_of(airflow_db: Services, pipeline: str, run_id: str) -> dict[str, Any]:
    found = [d for d in decisions(airflow_db.scores_url, pipeline) if d["run_id"] == run_id]
    assert len(found) == 1
    return found[0]


def test_the_request_carries_the_evidence_and_a_rejection_changes_nothing(
    airflow_db: Services, client: AirflowClient, evaluated: dict[str, int]
) -> None:
    registry = ModelRegistry(airflow_db.registry)
    before = (registry.aliases(PROMO), len(registry.alias_history(PROMO)))
    run_id, detail = request(client, f"promote_{PROMO}")
    assert detail["subject"] == (
        f"Promote {PROMO} v{evaluated['challenger']} to champion (now v{evaluated['champion']}) for {PROMO}?"
    )
    body = detail["body"]
    assert detail["options"] == ["Approve", "Reject"]
    for window in WINDOWS:
        assert window.start.isoformat()[:16] in body
    assert "Requirement: the challenger" in body
    for column in ("roc_auc champion / challenger", "label agreement", "score PSI", "drift"):
        assert column in body
    answered = answer(airflow_db, f"promote_{PROMO}", run_id, "Reject")
    assert answered["responded_by"]["name"] == REVIEWER
    client.wait_for_runs(f"promote_{PROMO}", {run_id}, timeout=300)
    assert (registry.aliases(PROMO), len(registry.alias_history(PROMO))) == before
    recorded = decision_of(airflow_db, PROMO, run_id)
    assert (recorded["decision"], recorded["decided_by"]) == ("rejected", REVIEWER)
    assert (recorded["from_version"], recorded["to_version"]) == (evaluated["champion"], evaluated["challenger"])
    assert len(recorded["evidence"]["windows"]) == 2


def test_an_unanswered_request_expires_without_change(
    airflow_db: Services, client: AirflowClient, evaluated: dict[str, int]
) -> None:
    registry = ModelRegistry(airflow_db.registry)
    before = (registry.aliases(PROMO), len(registry.alias_history(PROMO)))
    run_id, _ = request(client, f"promote_{PROMO_EXPIRY}")  # 36 s to answer, and nobody does
    [run] = client.wait_for_runs(f"promote_{PROMO_EXPIRY}", {run_id}, timeout=300, allow_failed=True)
    assert run["state"] == "failed"
    assert (registry.aliases(PROMO), len(registry.alias_history(PROMO))) == before
    recorded = decision_of(airflow_db, PROMO_EXPIRY, run_id)
    assert (recorded["decision"], recorded["decided_by"]) == ("expired", None)


def test_an_approval_moves_the_alias_and_records_the_approver(
    airflow_db: Services, client: AirflowClient, evaluated: dict[str, int]
) -> None:
    registry = ModelRegistry(airflow_db.registry)
    assert registry.aliases(PROMO)["champion"] == evaluated["champion"]
    run_id, _ = request(client, f"promote_{PROMO}")
    answer(airflow_db, f"promote_{PROMO}", run_id, "Approve")
    client.wait_for_runs(f"promote_{PROMO}", {run_id}, timeout=300)
    assert registry.aliases(PROMO)["champion"] == evaluated["challenger"]
    last = registry.alias_history(PROMO)[-1]
    assert (last["alias"], last["from"], last["to"]) == ("champion", evaluated["champion"], evaluated["challenger"])
    assert last["by"].startswith(f"{REVIEWER} (approved in {PROMO} promotion run {run_id})")
    assert last["evidence"]["window_count"] == 2
    assert last["evidence"]["requirement"]["metric"] == "roc_auc"
    recorded = decision_of(airflow_db, PROMO, run_id)
    assert (recorded["decision"], recorded["decided_by"]) == ("approved", REVIEWER)
