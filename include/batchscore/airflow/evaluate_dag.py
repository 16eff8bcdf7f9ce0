"""The DAG ``evaluate_<name>``: each scored window judged against its outcomes once they are complete.

A run's window is its data interval, on the scoring DAG's own timetable, so a backfill of
``evaluate_<name>`` over old dates evaluates exactly those scored windows, and a run triggered
with ``window_start``/``window_end`` evaluates that one. A scheduled run starts when its window
ends, so it first waits for the horizon (a sensor in reschedule mode: no worker slot held);
a backfill or a manual run does not wait: a window not yet past its horizon is skipped, with
the reason, and nothing is written. Parse time reads one YAML file, as the scoring DAG does.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import DAG, CronDataIntervalTimetable, dag, get_current_context, task

from batchscore.airflow.dag_factory import trigger_params
from batchscore.airflow.dag_inputs import first_day, pipeline_config
from batchscore.pipeline.config import ConfigError, PipelineConfig
from batchscore.pipeline.schedule_config import grid_cron

POKE_SECONDS = 3600  # how often a waiting scheduled run looks at the clock again


def _window_params(config: PipelineConfig) -> dict[str, Any]:
    params = trigger_params(config)
    return {name: params[name] for name in ("window_start", "window_end")}


def _runs_in_flight(config: PipelineConfig) -> int:
    """Enough active runs for every window still waiting for its horizon, plus a few for backfills."""
    from croniter import croniter

    assert config.outcomes is not None
    times = croniter(grid_cron(config.schedule), datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))
    period = timedelta(seconds=max(1.0, float(times.get_next()) - float(times.get_prev())))
    return min(128, math.ceil(config.outcomes.horizon_delta / period) + 3)


def build_evaluate_dag(config: PipelineConfig) -> DAG:
    """The evaluation DAG ``evaluate_<name>`` of a pipeline with ``outcomes``."""
    outcomes = config.outcomes
    if outcomes is None:
        raise ConfigError(f"{config.name}: has no outcomes; add outcomes (query, horizon) to evaluate it")

    @dag(
        dag_id=f"evaluate_{config.name}",
        description=f"Realised performance of {config.name}'s scores, {outcomes.horizon} after each window",
        schedule=CronDataIntervalTimetable(grid_cron(config.schedule), timezone=config.timezone),
        start_date=first_day(config),
        catchup=config.catchup,
        max_active_runs=_runs_in_flight(config),
        params=_window_params(config),
        tags=["batch-scoring", "evaluation", *config.tags],
        default_args={"owner": config.owner, "retries": 2, "retry_delay": timedelta(minutes=5)},
        doc_md=f"Judges the published scores of `{config.output.table}` (and the challenger's) against "
        f"`outcomes.query` once a window is {outcomes.horizon} old; records `scoring.performance`.",
    )
    def evaluation() -> None:
        @task.sensor(poke_interval=POKE_SECONDS, mode="reschedule", timeout=outcomes.horizon_delta.total_seconds() * 2)
        def wait_for_horizon() -> bool:
            """A scheduled run waits until its window's outcomes are complete; other runs go on at once."""
            from batchscore.airflow import glue
            from batchscore.run.evaluation import outcomes_due

            context = get_current_context()
            run_type = context["dag_run"].run_type
            if getattr(run_type, "value", run_type) != "scheduled":
                return True
            window = glue.window_from_context(config, context)
            return _clock() >= outcomes_due(outcomes, window)

        @task
        def evaluate() -> dict[str, Any]:
            """Judge the window's published scores against its outcomes and record them (replacing earlier rows)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from batchscore.airflow import glue
            from batchscore.run.evaluation import evaluate_window

            context = get_current_context()
            with glue.failing_fast():
                window = glue.window_from_context(config, context)
                result = evaluate_window(
                    config, glue.evaluation_endpoints(config), window, run_id=context["run_id"], now=_clock()
                )
            if result.status == "skipped":
                raise AirflowSkipException(result.reason)
            return result.to_dict()

        wait_for_horizon() >> evaluate()

    return evaluation()


def _clock() -> datetime:
    """The horizon is the one thing judged against the clock: the window itself comes from the run."""
    from datetime import UTC

    return datetime.now(UTC)


def evaluate_dag_for_pipeline(name: str) -> DAG:
    """The evaluation DAG of the pipeline file ``<name>.yaml`` (what its generated DAG file calls)."""
    return build_evaluate_dag(pipeline_config(name))
