"""``bench.py --through-airflow``: one full window through the scoring DAG on a real scheduler.

Starts the local Airflow stack (api-server, scheduler, dag-processor, LocalExecutor) with
its metadata in the bench database, declares a bench pipeline whose DAG scores the bench
window, triggers it through the REST API and reports the time from trigger to success,
with each task's duration.
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
    """Trigger the bench DAG once and time it; returns seconds and per-task durations."""
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
    stack = LocalStack(root=bench_dir, external_url=url, api_port=free_port())
    stack.migrate()
    stack.start_services()
    try:
        client = AirflowClient(f"http://127.0.0.1:{stack.api_port}")
        dag_id = f"score_{DAG_NAME}"
        client.wait_for_dag(dag_id)
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        started = time.perf_counter()
        run = client.send(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {
                "logical_date": None,
                "conf": {"window_start": window[0].isoformat(), "window_end": window[1].isoformat()},
            },
        )
        client.wait_for_runs(dag_id, {run["dag_run_id"]}, timeout=3600)
        seconds = time.perf_counter() - started
        tasks = client.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)["task_instances"]
        durations = {
            f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: round(t["duration"] or 0.0, 1)
            for t in tasks
        }
        return {"seconds": seconds, "run_id": run["dag_run_id"], "task_seconds": durations}
    finally:
        stack.stop_services()
