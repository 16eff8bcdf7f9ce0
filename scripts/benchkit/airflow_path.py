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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

DAG_NAME = "bench_airflow"

OUTPUT_TABLE = "bench.airflow_scores"


def pipeline_file(
    folder: Path, *, query: str, features: list[str], rows: int, part_rows: int | None, workers: int = 0
) -> Path:
    """The bench pipeline as a config file (start_date in the future: unpausing schedules nothing).

    ``workers``: Celery workers of concurrency 1 sharing this machine (0: LocalExecutor); the
    slices are the same, and each slice task gets the cores of its worker's share.
    """
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
        "output": {"conn_id": "bench_db", "table": OUTPUT_TABLE},
        "validation": {"max_reject_fraction": 0.0},
        # One slice per core: each slice task keeps its core busy and pays its start-up once.
        "execution": {
            "slice_rows": part_rows or max(250_000, math.ceil(rows / cores)),
            "max_slices": cores,
            "batch_rows": 100_000,
            "parallel_slices": workers or cores,
            **({"threads_per_slice": max(1, cores // workers)} if workers else {}),
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
    triggered = datetime.now(UTC)
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
    return {"seconds": seconds, "run_id": run["dag_run_id"], "task_seconds": durations, "triggered": triggered}


def _drop_published(url: str, window: tuple[datetime, datetime]) -> None:
    """Drop the bench table's published windows inside ``window`` (the small runs'), so the full window may be scored.

    Windows of one scores table never overlap (the engine refuses it, naming the partition to
    drop), and the small runs' window is the start of the full one.
    """
    import psycopg
    from psycopg import sql

    from batchscore.pipeline.windows import Window
    from batchscore.sink.published_windows import published_windows

    with psycopg.connect(url, autocommit=True) as conn:
        for published in published_windows(conn, OUTPUT_TABLE, overlapping=Window(*window)):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(*published.partition.split(".", 1))))


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
    celery_workers: int = 0,
    small_rows: int | None = None,
    small_runs: int = 1,
    small_only: bool = False,
) -> dict[str, Any]:
    """Time the bench DAG on a real scheduler: a small window (first run after start, then again), then the window.

    The first run after the stack starts pays one-off costs (the API server's first
    requests, cold caches); the second small run and the full window are what a
    long-running deployment's nightly runs see. With ``celery_workers``, the stack runs
    CeleryExecutor with that many workers (concurrency 1, a Redis broker), and the result
    holds each worker's CPU seconds during the full window.
    """
    from batchscore.local.airflow_client import AirflowClient
    from batchscore.local.embedded_pg import free_ports
    from batchscore.local.services import group_cpu_seconds, start_redis
    from batchscore.local.stack import LocalStack
    from benchkit.dag_timeline import timeline

    pipelines = bench_dir / "pipelines"
    pipeline_file(pipelines, query=query, features=features, rows=rows, part_rows=part_rows, workers=celery_workers)
    os.environ.update(
        {
            "BATCHSCORE_PIPELINES_DIR": str(pipelines),
            "BATCHSCORE_MODEL_REGISTRY": str(registry),
            "AIRFLOW_CONN_BENCH_DB": url,
        }
    )
    api_port, redis_port, log_port = free_ports(3)
    redis = start_redis(bench_dir / "redis", redis_port) if celery_workers else None
    # The bench pipeline's generated DAG file goes to a DAG folder of its own (never the project's).
    stack = LocalStack(
        root=bench_dir,
        external_url=url,
        api_port=api_port,
        log_port=log_port,
        dags_dir=bench_dir / "dags",
        name="airflow_celery" if celery_workers else "airflow",
        executor="CeleryExecutor" if celery_workers else "LocalExecutor",
        broker_url=f"redis://127.0.0.1:{redis_port}/0" if celery_workers else None,
    )
    stack.migrate()
    stack.start_services()
    workers = [f"worker{i + 1}" for i in range(celery_workers)]
    for name in workers:
        _wait_ready(stack.start_worker(name) / "worker.log")
    try:
        client = AirflowClient(f"http://127.0.0.1:{stack.api_port}")
        dag_id = f"score_{DAG_NAME}"
        client.wait_for_dag(dag_id)
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        fraction = min(1.0, small_rows / rows) if small_rows else SMALL_FRACTION
        small_window = (window[0], window[0] + (window[1] - window[0]) * fraction)
        first = _trigger(client, dag_id, small_window)
        steady = [_trigger(client, dag_id, small_window) for _ in range(max(1, small_runs))]
        small = sorted(steady, key=lambda run: run["seconds"])[len(steady) // 2]  # the median run
        record = _run_record(url, small["run_id"])
        events = timeline(
            client, dag_id, small["run_id"], small.pop("triggered"), stack.home / "logs", record.get("slices", [])
        )
        first_record = _run_record(url, first["run_id"])
        first_events = timeline(
            client, dag_id, first["run_id"], first.pop("triggered"), stack.home / "logs", first_record.get("slices", [])
        )
        small_part = {
            "first_run_seconds": first["seconds"],
            "first_run_timeline": first_events,
            "steady_seconds": [round(run["seconds"], 2) for run in steady],
            **small,
            **record,
            "timeline": events,
        }
        if small_only:
            return {"small": small_part, "workers": celery_workers}
        leaders = {name: int((stack.home / f"worker-{name}.pid").read_text()) for name in workers}
        before = {name: group_cpu_seconds(pid) for name, pid in leaders.items()}
        _drop_published(url, window)
        full = _trigger(client, dag_id, window)
        full.pop("triggered")
        cpu = {name: round(group_cpu_seconds(pid) - before[name], 1) for name, pid in leaders.items()}
        return {
            **full,
            "workers": celery_workers,
            "worker_cpu_seconds": cpu,
            **_run_record(url, full["run_id"]),
            "small": small_part,
        }
    finally:
        stack.stop_services()
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=30)


def _wait_ready(log: Path, timeout: float = 120) -> None:
    """Until a Celery worker says it is ready (its log's ``ready.``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Celery worker never became ready; see {log}")
