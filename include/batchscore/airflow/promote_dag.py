"""The DAG ``promote_<name>``: the challenger's evidence put to a person, and their decision carried out.

``gather_evidence`` reads the recorded performance (no model is loaded); ``approve`` is Airflow's
human-in-the-loop ApprovalOperator, shown under the UI's required actions with the evidence as
its body, answered there or through the REST API. When the answer comes, the same task carries
it out: an approval moves the alias (recording the approver and the evidence), a rejection or a
request that expired unanswered is recorded. Nothing changes but on approval.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, dag, task

from batchscore.airflow.dag_inputs import first_day, pipeline_config
from batchscore.pipeline.config import ConfigError, PipelineConfig

EVIDENCE = "gather_evidence"


class EvidencedApproval(ApprovalOperator):
    """Airflow's ApprovalOperator that carries out its own answer, so no decision passes through XCom.

    When the answer arrives (``execute_complete``, on a worker): an approval moves the alias
    and records the approver, a rejection is recorded (and the operator skips what follows),
    and a request that timed out unanswered is recorded as expired before the task fails.
    """

    def __init__(self, *, config: PipelineConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from batchscore.airflow import glue
        from batchscore.run.promotion import apply_decision

        evidence = context["ti"].xcom_pull(task_ids=EVIDENCE)["evidence"]
        run_id = context["run_id"]
        if "error" in event:  # unanswered (timeout) or a failed request: nothing changes
            if event.get("error_type") == "timeout":
                apply_decision(
                    self.config, glue.endpoints(self.config), evidence, decision="expired", by=None, run_id=run_id
                )
            return super().execute_complete(context=context, event=event)
        user = event.get("responded_by_user") or {}
        by = user.get("name") or user.get("id")
        approved = list(event.get("chosen_options") or []) == [self.APPROVE]
        with glue.failing_fast():
            apply_decision(
                self.config,
                glue.endpoints(self.config),
                evidence,
                decision="approved" if approved else "rejected",
                by=by,
                run_id=run_id,
            )
        return super().execute_complete(context=context, event=event)


def build_promote_dag(config: PipelineConfig) -> DAG:
    """The promotion DAG ``promote_<name>`` of a pipeline with ``promotion`` (and shadow and outcomes)."""
    promotion = config.promotion
    if promotion is None:
        raise ConfigError(f"{config.name}: has no promotion; add promotion (and shadow, outcomes) to ask for one")

    @dag(
        dag_id=f"promote_{config.name}",
        description=f"Promote {config.name}'s challenger to {config.model.reference}, on evidence, by approval",
        schedule=promotion.schedule,
        start_date=first_day(config),
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

        approve = EvidencedApproval(
            task_id="approve",
            config=config,
            subject=f"{{{{ ti.xcom_pull(task_ids='{EVIDENCE}')['subject'] }}}}",
            body=f"{{{{ ti.xcom_pull(task_ids='{EVIDENCE}')['body'] }}}}",
            response_timeout=timedelta(hours=promotion.timeout_hours),
        )

        gather_evidence() >> approve

    return promotion_dag()


def promote_dag_for_pipeline(name: str) -> DAG:
    """The promotion DAG of the pipeline file ``<name>.yaml`` (what its generated DAG file calls)."""
    return build_promote_dag(pipeline_config(name))
