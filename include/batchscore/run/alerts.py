"""What a run tells someone when it goes wrong: the alert's event and its message, channel-neutral.

The Airflow adapter (:mod:`batchscore.airflow.notify`) picks the ``notify:`` rules that take the
event and hands the message to the providers' notifiers. Every field is plain text: nothing in a
message (an error may quote source data) is ever rendered as a template; the HTML form escapes it.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from batchscore.errors import one_line, remedy_of, root_cause
from batchscore.pipeline.notify import EVENTS, Event
from batchscore.pipeline.windows import Window

_TITLES: dict[str, str] = {
    "failure": "run failed",
    "drift_hold": "publish held by drift",
    "guard": "publish held by the volume guard",
    "upstream_timeout": "upstream data not landed",
    "deadline_missed": "scores not landed by the deadline",
}


def event_of(error: BaseException | str) -> Event:
    """The ``notify:`` event of a run that failed with ``error``: its permanent cause's ``alert_event``."""
    if isinstance(error, str):
        return "failure"
    event = getattr(root_cause(error), "alert_event", "failure")
    return event if event in EVENTS else "failure"


@dataclass(frozen=True)
class Alert:
    """One message about one run: which pipeline, window and stage, why, what to do, where to look.

    ``run_page`` is the Scoring view's page of the run; ``task_log`` the failed task's log in
    Airflow's UI (None when no task failed, as for a missed deadline).
    """

    event: Event
    pipeline: str
    dag_id: str
    run_id: str
    window: Window | None
    stage: str | None
    cause: str
    remedy: str
    run_page: str
    task_log: str | None

    @property
    def window_text(self) -> str:
        return str(self.window) if self.window else "(window not resolved)"

    @property
    def subject(self) -> str:
        return f"[batchscore] {self.pipeline}: {_TITLES[self.event]} for {self.window_text}"

    def text(self) -> str:
        """The message as plain text (Slack, logs): one field a line."""
        lines = [
            self.subject,
            f"Pipeline: {self.pipeline} (DAG {self.dag_id}, run {self.run_id})",
            f"Window: {self.window_text}",
            f"Stage: {self.stage or '-'}",
            f"Cause: {self.cause}",
            f"Remedy: {self.remedy}",
            f"Run page: {self.run_page}",
        ]
        if self.task_log:
            lines.append(f"Task log: {self.task_log}")
        return "\n".join(lines)

    def html(self) -> str:
        """The message as an HTML mail body, every value escaped."""
        rows = [
            ("Pipeline", f"{self.pipeline} (DAG {self.dag_id}, run {self.run_id})"),
            ("Window", self.window_text),
            ("Stage", self.stage or "-"),
            ("Cause", self.cause),
            ("Remedy", self.remedy),
        ]
        body = "".join(f"<tr><th align='left'>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        links = f"<a href='{html.escape(self.run_page, quote=True)}'>Run page</a>"
        if self.task_log:
            links += f" · <a href='{html.escape(self.task_log, quote=True)}'>Task log</a>"
        return f"<p>{html.escape(self.subject)}</p><table>{body}</table><p>{links}</p>"

    def to_json(self) -> dict[str, object]:
        """The webhook body: every field, the window as ISO bounds."""
        data = asdict(self)
        data["window"] = (
            {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()} if self.window else None
        )
        data["subject"] = self.subject
        return data


def failure_alert(
    *,
    pipeline: str,
    dag_id: str,
    run_id: str,
    error: BaseException | str,
    stage: str | None,
    window: Window | None,
    run_page: str,
    task_log: str | None,
) -> Alert:
    """The alert of a failed run: its event from the error, the cause and remedy as the run record has them."""
    cause = error if isinstance(error, str) else root_cause(error)
    return Alert(
        event=event_of(error),
        pipeline=pipeline,
        dag_id=dag_id,
        run_id=run_id,
        window=window,
        stage=stage,
        cause=one_line(cause),
        remedy=remedy_of(cause) if not isinstance(cause, str) else "see the task log",
        run_page=run_page,
        task_log=task_log,
    )


def _deadline_remedy(record_status: str | None, stage: str | None) -> str:
    """What the on-call engineer does about a window that is late, by where its run is."""
    if record_status == "failed":
        return f"the run failed in {stage}: fix the cause on its run page, then clear the failed task to re-score"
    if record_status is None and stage == "wait_for_upstream":
        return "the upstream data has not landed: chase the upstream load; the run scores as soon as it lands"
    if record_status is None:
        return "the run has not started scoring: check the scheduler and the executor's free slots"
    if record_status == "dry_run":
        return "the run was a dry run, which publishes nothing: trigger a run without dry_run"
    return "the run is still scoring: it publishes when done; look at its slices for a slow or stuck one"


def deadline_alert(
    *,
    pipeline: str,
    dag_id: str,
    run_id: str,
    window: Window,
    due: datetime,
    land_by: str,
    zone: str,
    run_state: str,
    record_status: str | None,
    stage: str | None,
    run_page: str,
    task_log: str | None,
) -> Alert:
    """The alert of a run whose window was not published by ``due``: ``sla.land_by`` in the SLA's ``zone``.

    ``record_status`` is the run record's status when the deadline passed (None: not planned yet),
    ``stage`` the task the run waits in or failed in, when known.
    """
    try:
        local = due.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        local = due
    cause = (
        f"scores for {window} not published by {local:%Y-%m-%d %H:%M:%S %Z} (sla.land_by {land_by} {zone}); "
        f"the Airflow run is {run_state}"
    )
    return Alert(
        event="deadline_missed",
        pipeline=pipeline,
        dag_id=dag_id,
        run_id=run_id,
        window=window,
        stage=stage,
        cause=cause,
        remedy=_deadline_remedy(record_status, stage),
        run_page=run_page,
        task_log=task_log,
    )
