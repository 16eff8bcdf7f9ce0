"""``batchscore backfill``: re-score a date range of an asset-scheduled pipeline, one manual run per period.

Airflow 3.3 refuses ``airflow backfill create`` for a DAG on an asset timetable (it has no period
to cut the range by). This command triggers what a backfill would have, through the REST API v2:
one run per period of the pipeline whose start falls on a day in [from, to] (in the pipeline's
timezone) and which has ended. A partitioned pipeline's runs carry the partition key (they are
partitioned runs, and their scores events reach partitioned consumers); a plain-asset pipeline's
runs carry the trigger form's window. Each run replaces its window's scores. Cron pipelines keep
``airflow backfill create``. The password is read from ``AIRFLOW_PASSWORD``, never from the command line.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # the CLI imports this module on every command: the engine is imported when it runs
    from batchscore.pipeline.config import PipelineConfig
    from batchscore.pipeline.windows import Window

MAX_RUNS = 1000


@dataclass(frozen=True)
class PlannedRun:
    """One run to trigger: its window and the REST body that asks for it."""

    window: Window
    body: dict[str, Any]


def plan_backfill(config: PipelineConfig, first: date, last: date, now: datetime) -> list[PlannedRun]:
    """The runs that re-score the periods starting on [first, last] and ended by ``now``, oldest first."""
    from batchscore.pipeline.schedule_config import AssetSchedule
    from batchscore.pipeline.windows import Window

    schedule = config.schedule
    if not isinstance(schedule, AssetSchedule):
        raise ValueError(
            f"pipeline {config.name} runs on a cron: use airflow backfill create --dag-id {config.dag_id} "
            f"--from-date {first} --to-date {last}"
        )
    if first > last:
        raise ValueError(f"--from-date {first} is after --to-date {last}")
    from croniter import croniter

    tz = ZoneInfo(config.timezone)
    ticks = croniter(schedule.grid_cron, datetime.combine(first, datetime.min.time(), tzinfo=tz) - timedelta(seconds=1))
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    runs: list[PlannedRun] = []
    start: datetime = ticks.get_next(datetime)
    while start.astimezone(tz).date() <= last:
        end: datetime = ticks.get_next(datetime)
        window = Window(start, end)
        if window.end > now:
            break
        body: dict[str, Any] = {"logical_date": None, "dag_run_id": f"manual__{window.slug}__{stamp}"}
        if schedule.partitioned:
            body["partition_key"] = start.astimezone(tz).strftime(schedule.downstream_key_format)
        else:
            body["conf"] = {"window_start": window.start.isoformat(), "window_end": window.end.isoformat()}
        runs.append(PlannedRun(window, body))
        if len(runs) > MAX_RUNS:
            raise ValueError(f"more than {MAX_RUNS} runs in {first}..{last}: backfill a shorter range at a time")
        start = end
    return runs


def trigger_backfill(client: Any, config: PipelineConfig, runs: list[PlannedRun]) -> list[str]:
    """POST each planned run to the DAG; returns the run ids (the DAG's ``max_active_runs`` paces them)."""
    return [str(client.send("POST", f"/dags/{config.dag_id}/dagRuns", run.body)["dag_run_id"]) for run in runs]


def cmd_backfill(args: argparse.Namespace) -> None:
    from batchscore import settings
    from batchscore.local.airflow_client import AirflowClient
    from batchscore.local.stack import ADMIN_USER
    from batchscore.pipeline.config import load_config

    config = load_config(settings.pipelines_dir() / f"{args.pipeline}.yaml")
    runs = plan_backfill(
        config, date.fromisoformat(args.from_date), date.fromisoformat(args.to_date), datetime.now(UTC)
    )
    if not runs:
        raise ValueError(f"no ended period of {config.name} starts on {args.from_date}..{args.to_date}")
    for run in runs:
        print(f"{'would trigger' if args.dry_run else 'trigger'} {config.dag_id} {run.window} {run.body}")
    if args.dry_run:
        return
    password = os.environ.get("AIRFLOW_PASSWORD")
    if not password:
        raise ValueError("set AIRFLOW_PASSWORD (the API user's password) in the environment")
    client = AirflowClient(args.api_url, username=args.username or ADMIN_USER, password=password)
    run_ids = trigger_backfill(client, config, runs)
    print(f"triggered {len(run_ids)} run(s) of {config.dag_id}: {', '.join(run_ids)}")


def add_backfill_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="re-score a date range of an asset-scheduled pipeline (one manual run per period, REST API)",
    )
    p.add_argument("pipeline")
    p.add_argument("--from-date", required=True, help="first day (YYYY-MM-DD) whose periods are re-scored")
    p.add_argument("--to-date", required=True, help="last day (YYYY-MM-DD), inclusive")
    p.add_argument("--api-url", default=os.environ.get("AIRFLOW_API_URL", "http://127.0.0.1:8080"))
    p.add_argument("--username", default=os.environ.get("AIRFLOW_USERNAME"), help="default: admin")
    p.add_argument("--dry-run", action="store_true", help="list the runs, trigger nothing")
    p.set_defaults(func=cmd_backfill)
