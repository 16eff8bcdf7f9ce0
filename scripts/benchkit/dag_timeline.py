"""Where a DAG run's wall time goes: one timeline from trigger to success, and the gaps in it.

Three sources, all on this machine's clock: the REST API (the run's ``queued_at``, ``start_date``
and ``end_date``; each task instance's ``scheduled_when``, ``queued_when``, ``start_date`` and
``end_date``), each task's own log file (the task process's first line, the end of the Task
SDK's start-up parse, the task body's start and end, the last line after the XCom push) and the
run record (each slice's first row, in seconds after its process started). A task instance's
``start_date`` is taken by its supervisor right after it forked the task process, so it stands
for the process start.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

# What each task log line marks, by the Task SDK's own events (airflow.sdk.execution_time.task_runner).
_PARSED = "Worker startup parse complete"
_DONE = "Done. Returned value was"


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _log_marks(path: Path) -> dict[str, datetime]:
    """The task log's landmarks: first line, parse done, body start (the first ``::endgroup::``), done, last line."""
    marks: dict[str, datetime] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return marks
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        when = _when(event.get("timestamp"))
        if when is None:
            continue
        text = str(event.get("event", ""))
        marks.setdefault("process_first_log", when)
        if text.startswith(_PARSED):
            marks.setdefault("dag_parsed", when)
        elif text == "::endgroup::" and "dag_parsed" in marks:
            marks.setdefault("body_start", when)
        elif text.startswith(_DONE):
            marks["body_end"] = when
        marks["process_last_log"] = when
    return marks


def _log_path(logs: Path, dag_id: str, run_id: str, ti: dict[str, Any]) -> Path:
    folder = logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        folder /= f"map_index={ti['map_index']}"
    return folder / f"attempt={ti.get('try_number') or 1}.log"


def timeline(
    client: Any, dag_id: str, run_id: str, triggered: datetime, logs: Path, slices: list[dict[str, Any]]
) -> list[tuple[float, str]]:
    """(seconds after the trigger, what happened), in order, for one finished run."""
    run = client.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    tis = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    events: list[tuple[datetime, str]] = [(triggered, "trigger (POST dagRuns)")]
    for key, label in (("queued_at", "run queued"), ("start_date", "run running"), ("end_date", "run success")):
        if (when := _when(run.get(key))) is not None:
            events.append((when, label))
    first_row = {s["index"]: s.get("first_row_seconds") for s in slices}
    for ti in tis:
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        for key, label in (
            ("scheduled_when", "scheduled"),
            ("queued_when", "queued"),
            ("start_date", "running (process forked)"),
            ("end_date", "success reported"),
        ):
            if (when := _when(ti.get(key))) is not None:
                events.append((when, f"{name} {label}"))
        marks = _log_marks(_log_path(logs, dag_id, run_id, ti))
        for key, label in (
            ("process_first_log", "task process: first log line"),
            ("dag_parsed", "task process: DAG file parsed"),
            ("body_start", "task body starts"),
            ("body_end", "task body returns"),
            ("process_last_log", "task process: XCom pushed, last log line"),
        ):
            if key in marks:
                events.append((marks[key], f"{name} {label}"))
        started = _when(ti.get("start_date"))
        if ti["task_id"] == "score_slice" and started and first_row.get(ti["map_index"]) is not None:
            from datetime import timedelta

            events.append((started + timedelta(seconds=first_row[ti["map_index"]]), f"{name} first row read"))
    events.sort(key=lambda e: e[0])
    return [(round((when - triggered).total_seconds(), 3), label) for when, label in events]


def timeline_lines(events: list[tuple[float, str]]) -> str:
    """The timeline as lines: seconds after the trigger, the step since the line before, the event."""
    lines, last = [], 0.0
    for seconds, label in events:
        lines.append(f"    {seconds:6.2f}s  (+{seconds - last:4.2f})  {label}")
        last = seconds
    return "\n".join(lines)
