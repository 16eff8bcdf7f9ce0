"""``bench.py --through-airflow``: windows through the scoring DAG on a real scheduler.

Starts the local Airflow stack (api-server, scheduler, dag-processor, LocalExecutor) with
its metadata in the bench database, declares a bench pipeline whose DAG scores the bench
windows through the REST API and reports the time from trigger to success, with each
task's duration and what each slice task recorded about itself (``scoring_runs.slices``):
process start-up, first row, read and scoring seconds.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

DAG_NAME = "bench_airflow"


def pipeline_file(folder: Path, *, query: str, features: list[str], rows: int, part_rows: int | None) -> Path:
    """The bench pipeline as a config file (start_date in the future: unpausing schedules nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    cores = os.cpu_count() or 1
    config = {
        "name": DAG_NAME,
        "schedule": "0 0 * * *",
        "start_date": "2030-01-01",
        "source": {"conn_id": "bench_db", "query": query},
        "entity_key": "id",
        "features": features,
        "model": {"name": "bench", "version": "champion"},
        "output": {"conn_id": "bench_db", "table": "bench.airflow_scores"},
        "validation": {"max_reject_fraction": 0.0},
        # One slice per core: each slice task keeps its core busy and pays its start-up once.
        "execution": {
            "slice_rows": part_rows or max(250_000, math.ceil(rows / cores)),
            "max_slices": cores,
            "batch_rows": 100_000,
            "parallel_slices": cores,
            "retries": 0,
            "max_window_days": 2,
        },
    }
    path = folder / f"{DAG_NAME}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# The small window: 1% of the bench window (100k rows at 10M), the size of the demo's nightly run.
SMALL_FRACTION = 0.01
# How often the run's state is asked for: the measured time is late by up to this much.
POLL_SECONDS = 0.25


def _trigger(client: Any, dag_id: str, window: tuple[datetime, datetime]) -> dict[str, Any]:
    """Trigger one run for ``window`` and wait for success; trigger-to-success seconds and task durations."""
    started = time.perf_counter()
    run = client.send(
        "POST",
        f"/dags/{dag_id}/dagRuns",
        {"logical_date": None, "conf": {"window_start": window[0].isoformat(), "window_end": window[1].isoformat()}},
    )
    client.wait_for_runs(dag_id, {run["dag_run_id"]}, timeout=3600, poll=POLL_SECONDS)
    seconds = time.perf_counter() - started
    tasks = client.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)["task_instances"]
    durations = {
        f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: round(t["duration"] or 0.0, 1)
        for t in tasks
    }
    return {"seconds": seconds, "run_id": run["dag_run_id"], "task_seconds": durations}


def _run_record(url: str, run_id: str) -> dict[str, Any]:
    """What the run recorded about itself: rows, plan seconds and, per slice, start-up, first row, read, scoring."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT rows_read, plan_seconds, slices FROM scoring.scoring_runs WHERE pipeline = %s AND run_id = %s",
            (DAG_NAME, run_id),
        ).fetchone()
    if row is None:
        return {}
    keep = (
        "index",
        "rows_in",
        "seconds",
        "startup_seconds",
        "first_row_seconds",
        "read_seconds",
        "score_seconds",
        "unique_key_seconds",
    )
    return {
        "rows": row[0],
        "plan_seconds": row[1],
        "slices": [{k: s.get(k) for k in keep} for s in row[2] or []],
    }


def through_airflow(
    *,
    url: str,
    bench_dir: Path,
    registry: Path,
    query: str,
    features: list[str],
    rows: int,
    window: tuple[datetime, datetime],
    part_rows: int | None,
) -> dict[str, Any]:
    """Time the bench DAG on a real scheduler: a small window (first run after start, then again), then the window.

    The first run after the stack starts pays one-off costs (the API server's first
    requests, cold caches); the second small run and the full window are what a
    long-running deployment's nightly runs see.
    """
    from batchscore.embedded_pg import free_port
    from batchscore.local import AirflowClient, LocalStack

    pipelines = bench_dir / "pipelines"
    pipeline_file(pipelines, query=query, features=features, rows=rows, part_rows=part_rows)
    os.environ.update(
        {
            "BATCHSCORE_PIPELINES_DIR": str(pipelines),
            "BATCHSCORE_MODEL_REGISTRY": str(registry),
            "AIRFLOW_CONN_BENCH_DB": url,
        }
    )
    # The bench pipeline's generated DAG file goes to a DAG folder of its own (never the project's).
    stack = LocalStack(root=bench_dir, external_url=url, api_port=free_port(), dags_dir=bench_dir / "dags")
    stack.migrate()
    stack.start_services()
    try:
        client = AirflowClient(f"http://127.0.0.1:{stack.api_port}")
        dag_id = f"score_{DAG_NAME}"
        client.wait_for_dag(dag_id)
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        small_window = (window[0], window[0] + (window[1] - window[0]) * SMALL_FRACTION)
        first = _trigger(client, dag_id, small_window)
        small = _trigger(client, dag_id, small_window)
        full = _trigger(client, dag_id, window)
        return {
            **full,
            **_run_record(url, full["run_id"]),
            "small": {
                "first_run_seconds": first["seconds"],
                **small,
                **_run_record(url, small["run_id"]),
            },
        }
    finally:
        stack.stop_services()
