"""``sla:`` as an Airflow deadline alert: a run whose window is not published by ``land_by`` notifies, once.

The DAG gets a Task SDK :class:`DeadlineAlert` whose reference, :class:`ScoresDue`, is the first
``land_by`` (wall-clock, in the SLA's zone) after the end of the run's window. Airflow's own
references cannot say that: ``DAGRUN_LOGICAL_DATE`` + an interval drifts by an hour across DST and
knows nothing of the window. The scheduler evaluates the reference once, when it creates the run;
plugins/deadlines_plugin.py registers the class, as Airflow requires of custom references.

Which runs get a deadline (:func:`scores_due`): scheduled runs always, even when created after
their due time (the scheduler was down: the scores are late); manual runs only when their due
time is still ahead (an operator scoring an old window on purpose is not paged for it); backfill
and asset-triggered runs never (their windows are old, or come from events the reference cannot
see). A manual run without a logical date gets its window as ``plan`` resolves it (the trigger
form's window, else the last complete interval before ``run_after``), so it is covered too.

When the deadline passes, the triggerer runs :func:`on_deadline_missed` (an ``AsyncCallback``):
unless a run published the window by then, it sets the run record's ``deadline_missed_at`` and
sends ``deadline_missed`` through the pipeline's ``notify:`` rules. It never raises: a miss that
cannot be recorded or delivered is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import REFERENCE_TYPE_FIELD, BaseDeadlineReference, DeadlineAlert

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.sla_config import SlaConfig, land_by_after
from batchscore.pipeline.windows import Window, resolve_window

log = logging.getLogger(__name__)

_FIELDS = ("land_by", "sla_timezone", "schedule", "timezone", "max_window_days")


@dataclass(frozen=True)
class RunWindow:
    """What the scheduler knows of a run when it creates it: enough to resolve its window as ``plan`` does."""

    run_type: str
    run_after: datetime
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    conf: dict[str, Any]


@dataclass(frozen=True)
class ScoresDue(BaseDeadlineReference):
    """Deadline reference: ``land_by`` in ``sla_timezone`` after the end of the run's window.

    Every field has a default, as Airflow's registration of a custom reference requires; the DAG
    factory fills them from the pipeline config (:func:`deadline_for`). The alert's interval is 0.
    """

    land_by: str = "06:00"
    sla_timezone: str = "UTC"
    schedule: str | None = "0 0 * * *"
    timezone: str = "UTC"
    max_window_days: int = 31

    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        return {REFERENCE_TYPE_FIELD: self.reference_name, **{name: getattr(self, name) for name in _FIELDS}}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> ScoresDue:
        return cls(**{name: reference_data[name] for name in _FIELDS if name in reference_data})

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> datetime | None:
        """The run's due time, or None (no deadline for this run). Called by the scheduler; never raises."""
        try:
            from airflow.models import DagRun
            from sqlalchemy import select

            row = session.execute(
                select(
                    DagRun.run_type, DagRun.run_after, DagRun.data_interval_start, DagRun.data_interval_end, DagRun.conf
                ).where(DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"])
            ).one_or_none()
            if row is None:
                return None
            run_type = getattr(row[0], "value", row[0])
            run = RunWindow(str(run_type), row[1], row[2], row[3], dict(row[4] or {}))
            return self.due(run, now=datetime.now(UTC))
        except Exception:  # a deadline that cannot be computed must never stop the scheduler creating the run
            log.exception("no deadline for run %s of %s: it could not be computed", kwargs.get("run_id"), kwargs)
            return None

    def sla(self) -> SlaConfig:
        return SlaConfig(land_by=self.land_by, timezone=self.sla_timezone)

    def window(self, run: RunWindow) -> Window:
        """The run's window, resolved as ``plan`` resolves it (trigger-form window, data interval, run_after)."""
        from batchscore.airflow.glue import run_params

        start, end, _, _ = run_params(run.conf)
        if self.schedule is None and start is None and not run.data_interval_end:
            raise ValueError("the run has no window of its own (no schedule, no data interval, no form window)")
        return resolve_window(
            schedule=self.schedule or "0 0 * * *",
            tz=self.timezone,
            run_after=run.run_after,
            data_interval_start=run.data_interval_start,
            data_interval_end=run.data_interval_end,
            param_start=start,
            param_end=end,
            max_days=self.max_window_days,
        )

    def due(self, run: RunWindow, *, now: datetime) -> datetime | None:
        """When ``run``'s scores are due, or None when this run gets no deadline (see the module's rules)."""
        if run.run_type not in ("scheduled", "manual"):
            log.info("no deadline for a %s run: only scheduled and manual runs have one", run.run_type)
            return None
        sla = self.sla()
        due = land_by_after(self.window(run).end, sla.wall_clock, sla.zone())
        if run.run_type == "manual" and due <= now:
            log.info("no deadline for this manual run: its window was due at %s already", due.isoformat())
            return None
        return due


def deadline_for(config: PipelineConfig) -> DeadlineAlert | None:
    """The DAG's ``deadline=``: None without ``sla:``. The callback names the pipeline, nothing else."""
    if config.sla is None:
        return None
    schedule = config.schedule if isinstance(config.schedule, str) else None
    reference = ScoresDue(
        land_by=config.sla.land_by,
        sla_timezone=config.sla.timezone or config.timezone,
        schedule=schedule,
        timezone=config.timezone,
        max_window_days=config.execution.max_window_days,
    )
    return DeadlineAlert(
        reference=reference,
        interval=timedelta(0),
        callback=AsyncCallback(on_deadline_missed, kwargs={"pipeline": config.name}),
        name=f"scores of {config.name} due by {config.sla.land_by} {reference.sla_timezone}",
    )


async def on_deadline_missed(pipeline: str, context: dict[str, Any] | None = None) -> str:
    """The deadline's callback, on the triggerer: record the miss and notify (in a thread; never raises)."""
    from asgiref.sync import sync_to_async

    try:
        return await sync_to_async(handle_deadline_miss)(pipeline, context or {})
    except Exception:
        log.exception("the missed deadline of a run of %s could not be handled", pipeline)
        return "error"


def handle_deadline_miss(pipeline: str, context: dict[str, Any]) -> str:
    """Record and announce one run's missed deadline; what it did (``notified``, ``published``, ...)."""
    from batchscore import settings
    from batchscore.airflow.glue import connection_url
    from batchscore.airflow.notify import notify_once, run_page, ui_base
    from batchscore.pipeline.config import load_config
    from batchscore.run.alerts import deadline_alert
    from batchscore.sink.deadline_misses import record_deadline_miss

    config = load_config(settings.pipelines_dir() / f"{pipeline}.yaml")
    dag_run = context.get("dag_run") or {}
    run_id = str(dag_run["dag_run_id"])
    reference = deadline_for(config)
    if reference is None:  # the sla was removed since the run was created
        log.info("run %s of %s missed a deadline the pipeline no longer sets; ignored", run_id, pipeline)
        return "no_sla"
    scores_due = reference.reference
    assert isinstance(scores_due, ScoresDue)  # built just above
    window = scores_due.window(_run_window(dag_run))
    due = _instant((context.get("deadline") or {}).get("deadline_time")) or land_by_after(
        window.end, scores_due.sla().wall_clock, scores_due.sla().zone()
    )
    scores_url = connection_url(config.output.conn_id)
    miss = record_deadline_miss(
        scores_url, pipeline=pipeline, run_id=run_id, window=window, output_table=config.output.table, due=due
    )
    if miss.published_at is not None:
        log.info("window %s of %s was published at %s, by its deadline: no alert", window, pipeline, miss.published_at)
        return "published"
    stage = miss.failed_stage or ("wait_for_upstream" if config.source.ready_when else "plan")
    alert = deadline_alert(
        pipeline=pipeline,
        dag_id=config.dag_id,
        run_id=run_id,
        window=window,
        due=due,
        land_by=scores_due.land_by,
        zone=scores_due.sla_timezone,
        run_state=str(dag_run.get("state") or "unknown"),
        record_status=miss.status,
        stage=stage if miss.status in (None, "failed") else None,
        run_page=run_page(pipeline, run_id),
        task_log=(
            f"{ui_base()}/dags/{quote(config.dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{stage}"
            if miss.status in (None, "failed")
            else None
        ),
    )
    sent = notify_once(config, alert, context, scores_url)
    log.warning("run %s of %s missed its deadline %s; alert sent via %s", run_id, pipeline, due.isoformat(), sent)
    return "notified" if sent else "recorded"


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _run_window(dag_run: dict[str, Any]) -> RunWindow:
    """The run as the deadline's context gives it (Airflow's DAG-run API model, dumped as JSON)."""
    run_after = _instant(dag_run.get("run_after")) or _instant(dag_run.get("queued_at")) or datetime.now(UTC)
    return RunWindow(
        run_type=str(dag_run.get("run_type") or "manual"),
        run_after=run_after,
        data_interval_start=_instant(dag_run.get("data_interval_start")),
        data_interval_end=_instant(dag_run.get("data_interval_end")),
        conf=dict(dag_run.get("conf") or {}),
    )
