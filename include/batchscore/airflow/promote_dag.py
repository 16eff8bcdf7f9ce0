"""The DAG ``promote_<name>``: the challenger's evidence put to a person, and their decision carried out.

``gather_evidence`` reads the recorded performance (no model is loaded); ``approve`` is Airflow's
human-in-the-loop ApprovalOperator, shown under the UI's required actions with the evidence as
its body, answered there or through the REST API; ``promote`` runs only on approval and moves
the alias (recording the approver and the evidence); ``record_decision`` runs whatever happened
and records a rejection, or a request that expired unanswered. Nothing changes but on approval.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, dag, get_current_context, task

from batchscore import settings
from batchscore.pipeline.config import ConfigError, PipelineConfig, load_config

EVIDENCE = "gather_evidence"


def _decision(context: Any) -> tuple[str, str | None]:
    """(approved | rejected | expired, the responder's name) from the approval task's result."""
    answer = context["ti"].xcom_pull(task_ids="approve")
    if not answer:
        return "expired", None
    user = answer.get("responded_by_user") or {}
    name = user.get("name") or user.get("id")
    return ("approved" if answer.get("chosen_options") == [ApprovalOperator.APPROVE] else "rejected"), name


def build_promote_dag(config: PipelineConfig) -> DAG:
    """The promotion DAG ``promote_<name>`` of a pipeline with ``promotion`` (and shadow and outcomes)."""
    promotion = config.promotion
    if promotion is None:
        raise ConfigError(f"{config.name}: has no promotion; add promotion (and shadow, outcomes) to ask for one")

    @dag(
        dag_id=f"promote_{config.name}",
        description=f"Promote {config.name}'s challenger to {config.model.reference}, on evidence, by approval",
        schedule=promotion.schedule,
        start_date=datetime.combine(config.start_date, datetime.min.time(), tzinfo=ZoneInfo(config.timezone)),
        catchup=False,
        max_active_runs=1,  # one open request at a time: two could approve against the same champion
        tags=["batch-scoring", "promotion", *config.tags],
        default_args={"owner": config.owner, "retries": 0},
        doc_md=f"Gathers the challenger's realised performance over the last {promotion.windows} evaluated "
        f"windows and asks for approval to move `{config.model.reference}`; expires after "
        f"{promotion.timeout_hours:g} h.",
    )
    def promotion_dag() -> None:
        @task(task_id=EVIDENCE)
        def gather_evidence() -> dict[str, Any]:
            """The evidence (JSON, for the decision record) and the request's subject and Markdown body."""
            from batchscore.airflow import glue
            from batchscore.run.promotion import gather_evidence, request_body

            with glue.failing_fast():
                evidence = gather_evidence(config, glue.endpoints(config))
            subject = (
                f"Promote {evidence['model']} v{evidence['challenger_version']} to {evidence['alias']} "
                f"(now v{evidence['champion_version']}) for {config.name}?"
            )
            return {"evidence": evidence, "subject": subject, "body": request_body(evidence)}

        approve = ApprovalOperator(
            task_id="approve",
            subject=f"{{{{ ti.xcom_pull(task_ids='{EVIDENCE}')['subject'] }}}}",
            body=f"{{{{ ti.xcom_pull(task_ids='{EVIDENCE}')['body'] }}}}",
            response_timeout=timedelta(hours=promotion.timeout_hours),
        )

        @task
        def promote() -> dict[str, Any]:
            """Move the alias to the challenger (on approval only: a rejection skips this task)."""
            from batchscore.airflow import glue
            from batchscore.run.promotion import apply_decision

            context = get_current_context()
            decision, by = _decision(context)
            evidence = context["ti"].xcom_pull(task_ids=EVIDENCE)["evidence"]
            with glue.failing_fast():
                previous = apply_decision(
                    config, glue.endpoints(config), evidence, decision=decision, by=by, run_id=context["run_id"]
                )
            return {"decision": decision, "by": by, "from": previous, "to": evidence["challenger_version"]}

        @task(trigger_rule="all_done")
        def record_decision() -> dict[str, Any]:
            """Record a rejection or an expired request (an approval was recorded by ``promote``)."""
            from batchscore.airflow import glue
            from batchscore.run.promotion import apply_decision

            context = get_current_context()
            decision, by = _decision(context)
            gathered = context["ti"].xcom_pull(task_ids=EVIDENCE)
            if decision == "approved" or not gathered:
                return {"decision": decision, "by": by, "recorded": decision == "approved"}
            apply_decision(
                config, glue.endpoints(config), gathered["evidence"], decision=decision, by=by, run_id=context["run_id"]
            )
            return {"decision": decision, "by": by, "recorded": True}

        gather_evidence() >> approve >> promote() >> record_decision()

    return promotion_dag()


def promote_dag_for_pipeline(name: str) -> DAG:
    """The promotion DAG of the pipeline file ``<name>.yaml`` (what its generated DAG file calls)."""
    path = settings.pipelines_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no such pipeline file; run `batchscore dags sync` to remove its DAG file")
    return build_promote_dag(load_config(path))
