"""The timed paths: each runs in a fresh interpreter and times its own work after its imports.

The hand-written paths are what a user would write (naive pandas, pandas or polars over
ADBC); the floor parts time the irreducible pieces alone; the engine is this project's
``run_pipeline``, exactly as the command line runs it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.data import (
    CATEGORICAL,
    ENGINE_QUERY,
    FEATURES,
    HAND_QUERY,
    MODEL_FEATURES,
    MODEL_NAME,
    OUTPUT_TABLES,
    PIPELINE,
    REGISTRY,
    SCHEMA,
    SEED,
    WINDOW_END,
    WINDOW_START,
    load_model,
)
from benchkit.measure_process import ThreadCpu, cores_busy, machine_jiffies

MODEL_MODULES = ("numpy", "pandas", "pyarrow", "sklearn.ensemble", "skops.io", "batchscore.models.registry")
WORKER_MODULES: dict[str, tuple[str, ...]] = {
    "naive": (*MODEL_MODULES, "sqlalchemy", "psycopg2"),
    "pandas_adbc": (*MODEL_MODULES, "adbc_driver_postgresql.dbapi"),
    "polars_adbc": (*MODEL_MODULES, "polars", "adbc_driver_postgresql.dbapi"),
    "floor_copy": ("psycopg",),
    "floor_predict": (*MODEL_MODULES, "adbc_driver_postgresql.dbapi", "batchscore.scoring.compiled_trees"),
    "floor_ingest": ("numpy", "pyarrow", "adbc_driver_postgresql.dbapi"),
    "engine": (
        *MODEL_MODULES,
        "batchscore.run.stages",
        "batchscore.pipeline.config",
        "adbc_driver_postgresql.dbapi",
        "psycopg",
        "psycopg2",
    ),
}
WORKER_MODULES["engine_no_drift"] = WORKER_MODULES["engine"]


@dataclass(frozen=True)
class WorkerArgs:
    """What a worker process needs; passed on its command line."""

    url: str
    rows: int
    table: str
    run_id: str
    part_rows: int | None
    batch_rows: int | None


@dataclass(frozen=True)
class Timed:
    """A worker's outcome: rows it wrote, and its own timing when only part of its work counts."""

    rows: int
    seconds: float | None = None
    extra: dict[str, float] | None = None  # figures of the path's own (CPU per stage, per part)


def _scores(model: Any, x: Any) -> Any:
    return model.predict_proba(x)[:, 1]


def work_naive(args: WorkerArgs) -> Timed:
    """What most tutorials do: SQLAlchemy + psycopg2 both ways, multi-row INSERTs out."""
    import pandas as pd
    import sqlalchemy as sa

    model = load_model()
    engine = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        df = pd.read_sql(HAND_QUERY, engine)
        out = pd.DataFrame({"id": df["id"], "score": _scores(model, df[list(MODEL_FEATURES)])})
        out.to_sql(
            args.table, engine, schema=SCHEMA, method="multi", chunksize=10_000, if_exists="replace", index=False
        )
    finally:
        engine.dispose()
    return Timed(len(out))


def work_pandas_adbc(args: WorkerArgs) -> Timed:
    """pandas with an ADBC connection: binary COPY in and out, whole window in memory."""
    import adbc_driver_postgresql.dbapi as adbc
    import pandas as pd

    model = load_model()
    with adbc.connect(args.url) as conn:
        df = pd.read_sql(HAND_QUERY, conn)
        out = pd.DataFrame({"id": df["id"], "score": _scores(model, df[list(MODEL_FEATURES)])})
        out.to_sql(args.table, conn, schema=SCHEMA, if_exists="replace", index=False)
        conn.commit()
    return Timed(len(out))


def work_polars_adbc(args: WorkerArgs) -> Timed:
    """polars over ADBC: Arrow end to end except the numpy matrix the model needs."""
    import polars as pl

    model = load_model()
    df = pl.read_database_uri(HAND_QUERY, args.url, engine="adbc")
    # the trees take a float matrix; a Pipeline takes a frame with its column names and text
    scores = _scores(model, df.select(MODEL_FEATURES).to_pandas() if PIPELINE else df.select(FEATURES).to_numpy())
    out = pl.DataFrame({"id": df["id"], "score": scores})
    out.write_database(f"{SCHEMA}.{args.table}", args.url, engine="adbc", if_table_exists="replace")
    return Timed(out.height)


def work_floor_copy(args: WorkerArgs) -> Timed:
    """Floor part 1: the server serialising the window by binary COPY to a client that discards it."""
    import psycopg

    started = time.perf_counter()
    with (
        psycopg.connect(args.url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY ({HAND_QUERY}) TO STDOUT (FORMAT BINARY)") as copy,
    ):
        for _ in copy:
            pass
    return Timed(0, time.perf_counter() - started)


def work_floor_predict(args: WorkerArgs) -> Timed:
    """Floor part 2: predict alone, on the window already in memory (loading untimed).

    The floor is the compiled trees' ``predict_proba`` (checked equal to scikit-learn's, which is
    timed beside). For a Pipeline, the CPU of its steps before the trees is measured apart.
    """
    import adbc_driver_postgresql.dbapi as adbc
    import numpy as np

    from batchscore.models.registry import FeatureSpec
    from batchscore.scoring.features import ArrowRows

    model = load_model()
    with adbc.connect(args.url) as conn, conn.cursor() as cur:
        cur.execute(HAND_QUERY)
        table = cur.fetch_arrow_table()
    specs = tuple(FeatureSpec(n, "numeric") for n in FEATURES) + tuple(
        FeatureSpec(n, "categorical") for n in CATEGORICAL
    )
    x: Any = (
        table.select(list(MODEL_FEATURES)).to_pandas()
        if PIPELINE
        else np.column_stack([table.column(name).to_numpy() for name in FEATURES])
    )
    rows = ArrowRows(table.select(list(MODEL_FEATURES)), specs) if PIPELINE else x
    del table
    started, cpu = time.perf_counter(), time.process_time()
    expected = _scores(model, x)
    sklearn_seconds, sklearn_cpu = time.perf_counter() - started, time.process_time() - cpu
    from batchscore.scoring.compiled_trees import accelerate

    # built (and its kernel loaded) before the clock starts; a Pipeline's steps read Arrow as in the engine
    fast = accelerate(model, list(MODEL_FEATURES), {s.name: s.kind for s in specs})
    fast.predict_proba(rows[:1000])  # and its self-check against scikit-learn done: once per process, not per row
    started, cpu = time.perf_counter(), time.process_time()
    scores = fast.predict_proba(rows)[:, 1]
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if not np.array_equal(scores, expected):
        raise RuntimeError("the compiled trees' scores differ from predict_proba's on the floor's window")
    extra = {"sklearn_seconds": sklearn_seconds, "sklearn_cpu": sklearn_cpu, "compiled_cpu": cpu_seconds}
    if PIPELINE:  # the split: the steps before the trees (over Arrow; scikit-learn's beside), then the trees
        cpu = time.process_time()
        matrix = fast._matrix(rows)
        extra["prep_cpu"] = time.process_time() - cpu
        cpu = time.process_time()
        fast._matrix(x)
        extra["sklearn_prep_cpu"] = time.process_time() - cpu
        cpu = time.process_time()
        fast.raw_predict(matrix, fast._threads())
        extra["trees_cpu"] = time.process_time() - cpu
    return Timed(0, seconds, extra)


def work_floor_ingest(args: WorkerArgs) -> Timed:
    """Floor part 3: ADBC ingest of N (id, score) rows held in memory into an UNLOGGED table."""
    import adbc_driver_postgresql.dbapi as adbc
    import numpy as np
    import pyarrow as pa

    data = pa.table(
        {
            "id": pa.array(np.arange(1, args.rows + 1, dtype=np.int64)),
            "score": pa.array(np.random.default_rng(SEED).random(args.rows)),
        }
    )
    with adbc.connect(args.url) as conn:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{args.table}")
            cur.execute(f"CREATE UNLOGGED TABLE {SCHEMA}.{args.table} (id bigint, score float8)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            written = cur.adbc_ingest(args.table, data, mode="append", db_schema_name=SCHEMA)
        conn.commit()
    return Timed(int(written), time.perf_counter() - started)


def engine_config(part_rows: int | None, batch_rows: int | None, drift: str = "warn", table: str = "") -> Any:
    """The bench pipeline, built in code; execution defaults unless the CLI overrides part/batch rows."""
    from batchscore.pipeline.config import PipelineConfig

    execution = {k: v for k, v in {"slice_rows": part_rows, "batch_rows": batch_rows}.items() if v is not None}
    return PipelineConfig.model_validate(
        {
            "name": "bench",
            "start_date": WINDOW_START.date().isoformat(),
            "source": {"conn_id": "bench_db", "query": ENGINE_QUERY},
            "entity_key": "id",
            "features": list(MODEL_FEATURES),
            "model": {"name": MODEL_NAME, "version": "champion"},
            "output": {"conn_id": "bench_db", "table": f"{SCHEMA}.{table or OUTPUT_TABLES['engine']}"},
            "validation": {"max_reject_fraction": 0.0},
            "drift": {"policy": drift},
            "execution": execution,
        }
    )


def engine_kwargs(run_pipeline: Callable[..., Any]) -> dict[str, Any]:
    """Only keyword arguments ``run_pipeline`` has today: ``parallel`` is passed when it exists."""
    return {"parallel": os.cpu_count()} if "parallel" in inspect.signature(run_pipeline).parameters else {}


def work_engine(args: WorkerArgs) -> Timed:
    """This pipeline's engine, all stages in one process, exactly as the command line runs it."""
    from batchscore.pipeline.windows import Window
    from batchscore.run.in_process import run_pipeline
    from batchscore.run.planning import Endpoints

    endpoints = Endpoints(source_url=args.url, scores_url=args.url, registry=str(REGISTRY))
    drift = "off" if args.table == OUTPUT_TABLES["engine_no_drift"] else "warn"
    config = engine_config(args.part_rows, args.batch_rows, drift, args.table)
    window = Window(WINDOW_START, WINDOW_END)
    result = run_pipeline(config, endpoints, window=window, run_id=args.run_id, **engine_kwargs(run_pipeline))
    extra = run_cpu(args.url, config.name, args.run_id)
    try:  # an engine before the COPY decoder (PYTHONPATH=<older checkout>) has no such module
        from batchscore.source.copy_stream import cpu_totals
    except ImportError:
        return Timed(int(result.rows_written), extra=extra)
    totals = cpu_totals()
    if totals["copy_threads"]:
        extra["cpu_copy_threads"], extra["cpu_decoding"] = totals["copy_threads"], totals["decoding"]
    return Timed(int(result.rows_written), extra=extra)


CPU_COLUMNS = ("startup", "model", "read", "score", "load", "publish")


def run_cpu(url: str, pipeline: str, run_id: str) -> dict[str, float]:
    """The run's CPU seconds per stage and rows per CPU second, as the engine recorded them in scoring_runs."""
    import psycopg

    columns = [f"{stage}_cpu_seconds" for stage in CPU_COLUMNS] + ["cpu_seconds", "rows_per_cpu_second"]
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT {', '.join(columns)} FROM scoring.scoring_runs WHERE pipeline = %s AND run_id = %s",
            (pipeline, run_id),
        ).fetchone()
    names = [*(f"cpu_{stage}" for stage in CPU_COLUMNS), "cpu_total", "rows_per_cpu_second"]
    return {name: float(value) for name, value in zip(names, row or (), strict=False) if value is not None}


WORKERS: dict[str, Callable[[WorkerArgs], Timed]] = {
    "naive": work_naive,
    "pandas_adbc": work_pandas_adbc,
    "polars_adbc": work_polars_adbc,
    "floor_copy": work_floor_copy,
    "floor_predict": work_floor_predict,
    "floor_ingest": work_floor_ingest,
    "engine": work_engine,
    "engine_no_drift": work_engine,  # the same engine with drift.policy off: what watching drift costs
}


def run_worker_mode(path: str, args: WorkerArgs, result_file: Path) -> int:
    """Worker process: import, then time everything after imports; write the outcome as JSON."""
    # A model fitted with column names warns on bare numpy input; the input is still column-ordered.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    for module in WORKER_MODULES[path]:
        importlib.import_module(module)
    threads = ThreadCpu() if path == "engine" else None
    machine = machine_jiffies()
    started = time.perf_counter()
    outcome = WORKERS[path](args)
    seconds = time.perf_counter() - started if outcome.seconds is None else outcome.seconds
    result = {"rows": outcome.rows, "seconds": seconds, "cores_busy": cores_busy(machine, machine_jiffies())}
    if threads is not None:
        result["thread_cpu"] = threads.stop()
    if outcome.extra:
        result["extra"] = outcome.extra
    result_file.write_text(json.dumps(result))
    return 0
