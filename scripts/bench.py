"""Benchmark: this pipeline's engine against hand-written scoring paths, side by side.

One run generates (or reuses) one window of feature rows in a dedicated embedded PostgreSQL,
registers one model, then runs every path on that same window and model, each in a FRESH
Python process so no path inherits another's imports, caches or heap:

    naive        pandas.read_sql over SQLAlchemy/psycopg2 -> predict_proba -> to_sql(method="multi")
    pandas_adbc  pandas.read_sql / to_sql over an ADBC connection (binary COPY both ways)
    polars_adbc  polars read_database_uri / write_database with engine="adbc"
    floor        the sum of three parts, each alone: binary COPY out to a discarding client,
                 predict_proba on the in-memory window, ADBC ingest into an UNLOGGED table
    engine       batchscore.job.run_pipeline (plan, extract, predict, load)

The parent measures wall time (including interpreter start-up) and peak RSS of each worker's
process tree (PostgreSQL server processes are not in it); each worker measures its own work
after imports. This is a benchmark, not a test: figures are noisy on a shared machine.

    .venv/bin/python scripts/bench.py --rows 200000
    make bench BENCH_ARGS="--rows 2000000 --skip-naive"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import psutil
    import psycopg
    import pyarrow as pa

    from batchscore.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".local" / "bench"
PGDATA = BENCH_DIR / "pgdata"
REGISTRY = BENCH_DIR / "registry"
RESULTS_DIR = ROOT / "bench-results"

DATABASE = "bench"
SCHEMA = "bench"
MODEL_NAME = "bench"
WINDOW_START = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 2, tzinfo=UTC)
FEATURES = tuple(f"f{i}" for i in range(20))
SEED = 0
TRAIN_SEED = 1  # training rows come from the same distribution but are not the scored rows
CHUNK_ROWS = 500_000
TRAIN_ROWS = 100_000
SAMPLE_IDS = 1_000
POLL_SECONDS = 0.05
SETTLE_SECONDS = 1.0
MAX_SCORE_DIFF = 1e-9

ENGINE_QUERY = (
    f"SELECT id, {', '.join(FEATURES)} FROM {SCHEMA}.features "
    "WHERE event_time >= :window_start AND event_time < :window_end"
)
# Hand-written paths run the same query with the bounds as literals (COPY and polars take no parameters).
HAND_QUERY = ENGINE_QUERY.replace(":window_start", f"'{WINDOW_START.isoformat()}'::timestamptz").replace(
    ":window_end", f"'{WINDOW_END.isoformat()}'::timestamptz"
)

PATH_LETTERS = {"a": "naive", "b": "pandas_adbc", "c": "polars_adbc", "d": "floor", "e": "engine"}
FLOOR_PARTS = ("floor_copy", "floor_predict", "floor_ingest")
OUTPUT_TABLES = {
    "naive": "out_naive",
    "pandas_adbc": "out_pandas_adbc",
    "polars_adbc": "out_polars_adbc",
    "floor_ingest": "out_floor",
    "engine": "bench_scores",
}
# Imported before a worker's clock starts, so every path times its work, not its imports.
MODEL_MODULES = ("numpy", "pandas", "pyarrow", "sklearn.ensemble", "skops.io", "batchscore.registry")
WORKER_MODULES: dict[str, tuple[str, ...]] = {
    "naive": (*MODEL_MODULES, "sqlalchemy", "psycopg2"),
    "pandas_adbc": (*MODEL_MODULES, "adbc_driver_postgresql.dbapi"),
    "polars_adbc": (*MODEL_MODULES, "polars", "adbc_driver_postgresql.dbapi"),
    "floor_copy": ("psycopg",),
    "floor_predict": (*MODEL_MODULES, "adbc_driver_postgresql.dbapi"),
    "floor_ingest": ("numpy", "pyarrow", "adbc_driver_postgresql.dbapi"),
    "engine": (*MODEL_MODULES, "batchscore.job", "batchscore.config", "adbc_driver_postgresql.dbapi", "psycopg"),
}


class BenchError(RuntimeError):
    """A worker failed or the bench database is not in the expected state."""


# --------------------------------------------------------------------------- data and model


def generate_features(rng: np.random.Generator, rows: int) -> np.ndarray:
    """``rows`` x 20 float64 features: standard normals, so the label rule below is easy to read."""
    return rng.standard_normal((rows, len(FEATURES)))


def true_label(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """The known rule: logistic of a few features (one interaction) plus noise."""
    import numpy as np

    logit = -1.0 + 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] + 0.5 * np.abs(x[:, 4])
    logit += rng.normal(0.0, 0.5, len(x))
    return rng.random(len(x)) < 1.0 / (1.0 + np.exp(-logit))


def feature_chunk(index: int, first_id: int, rows: int) -> pa.Table:
    """One chunk of ``bench.features``; seeded by (SEED, chunk index) so each chunk is reproducible alone."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng([SEED, index])
    x = generate_features(rng, rows)
    span_us = int((WINDOW_END - WINDOW_START).total_seconds() * 1_000_000)
    event_time = np.datetime64(WINDOW_START.replace(tzinfo=None), "us") + rng.integers(0, span_us, rows).astype(
        "timedelta64[us]"
    )
    columns: dict[str, pa.Array] = {
        "id": pa.array(np.arange(first_id, first_id + rows, dtype=np.int64)),
        "event_time": pa.array(event_time, pa.timestamp("us", "UTC")),
    }
    columns |= {name: pa.array(x[:, i]) for i, name in enumerate(FEATURES)}
    return pa.table(columns)


def train_model() -> Any:
    """A HistGradientBoostingClassifier fitted on fresh rows with named columns (as the engine feeds it)."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(TRAIN_SEED)
    x = generate_features(rng, TRAIN_ROWS)
    y = true_label(rng, x)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    return model.fit(pd.DataFrame(x, columns=list(FEATURES)), y)


def load_model() -> Any:
    """The registered champion, loaded as the engine loads it (sha256 check, skops allowlist)."""
    from batchscore.registry import ModelRegistry

    registry = ModelRegistry(str(REGISTRY))
    return registry.load(registry.resolve(MODEL_NAME, "champion"))


def ensure_model(retrain: bool) -> None:
    """Register the bench model as champion unless one exists (or when regenerating)."""
    from batchscore.registry import FeatureSpec, ModelRegistry

    registry = ModelRegistry(str(REGISTRY))
    if not retrain and "champion" in registry.aliases(MODEL_NAME):
        return
    specs = tuple(FeatureSpec(name, "numeric") for name in FEATURES)
    manifest = registry.register(MODEL_NAME, train_model(), specs, aliases=("champion",))
    print(f"setup: registered model {MODEL_NAME} v{manifest.version} as champion", flush=True)


# --------------------------------------------------------------------------- database


def running_port(datadir: Path) -> int | None:
    """The port of a bench server still running from an earlier ``--keep-server`` run, if any."""
    from batchscore.embedded_pg import EmbeddedPostgres

    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 4 or not lines[3].strip().isdigit():
        return None
    port = int(lines[3])
    return port if EmbeddedPostgres(datadir, port=port).is_running() else None


def start_server() -> EmbeddedPostgres:
    """Start (or adopt) the bench PostgreSQL with default server settings and create its database."""
    from batchscore.embedded_pg import EmbeddedPostgres, free_port

    pg = EmbeddedPostgres(PGDATA, port=running_port(PGDATA) or free_port()).start()
    pg.ensure_database(DATABASE)
    return pg


def connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def table_rows(url: str, table: str) -> int | None:
    """Row count of ``bench.<table>``, or None when the table does not exist."""
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{table}",)).fetchone() == (None,):
            return None
        row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()
        return int(row[0]) if row else 0


def create_features_table(url: str, rows: int) -> None:
    """(Re)create ``bench.features`` chunk by chunk through ADBC ingest (binary COPY)."""
    import adbc_driver_postgresql.dbapi as adbc

    columns = ", ".join(["id bigint", "event_time timestamptz", *(f"{f} float8" for f in FEATURES)])
    with adbc.connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {SCHEMA}.features")
            cur.execute(f"CREATE TABLE {SCHEMA}.features ({columns})")
            for index, first in enumerate(range(0, rows, CHUNK_ROWS)):
                chunk = feature_chunk(index, first + 1, min(CHUNK_ROWS, rows - first))
                cur.adbc_ingest("features", chunk, mode="append", db_schema_name=SCHEMA)
            cur.execute(f"CREATE INDEX features_event_time_idx ON {SCHEMA}.features (event_time)")
        conn.commit()
    # VACUUM as well as ANALYZE: it sets hint bits and the visibility map now, so the first
    # path to read the table does not pay for that (with data checksums, in WAL too).
    with connect(url) as conn:
        conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.features")


def ensure_features(url: str, rows: int, regenerate: bool) -> bool:
    """Make ``bench.features`` hold exactly ``rows`` rows; True when it was (re)generated."""
    with connect(url) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    if not regenerate and table_rows(url, "features") == rows:
        print(f"setup: reusing {SCHEMA}.features ({rows:,} rows)", flush=True)
        return False
    started = time.perf_counter()
    create_features_table(url, rows)
    print(f"setup: generated {SCHEMA}.features ({rows:,} rows) in {time.perf_counter() - started:.1f}s", flush=True)
    return True


def warm_cache(url: str) -> None:
    """Read the table once, untimed, so the first path does not start from a colder cache than the rest."""
    with connect(url) as conn:
        conn.execute(f"SELECT sum(f0) FROM {SCHEMA}.features").fetchone()


def drop_table(url: str, table: str) -> None:
    with connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{table} CASCADE")  # with its lineage view


def settle(url: str) -> None:
    """Flush dirty pages and pause, so every path starts from a similar server state."""
    with connect(url) as conn:
        conn.execute("CHECKPOINT")
    time.sleep(SETTLE_SECONDS)


def sample_ids(rows: int) -> list[int]:
    """A fixed sample of ids to compare scores across paths."""
    import numpy as np

    picked = np.random.default_rng(SEED).choice(rows, size=min(SAMPLE_IDS, rows), replace=False) + 1
    return sorted(int(i) for i in picked)


def sample_scores(url: str, table: str, ids: Sequence[int]) -> dict[int, float]:
    with connect(url) as conn:
        rows = conn.execute(f"SELECT id, score FROM {SCHEMA}.{table} WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {int(i): float(s) for i, s in rows}


# --------------------------------------------------------------------------- workers (one per fresh process)


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
        out = pd.DataFrame({"id": df["id"], "score": _scores(model, df[list(FEATURES)])})
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
        out = pd.DataFrame({"id": df["id"], "score": _scores(model, df[list(FEATURES)])})
        out.to_sql(args.table, conn, schema=SCHEMA, if_exists="replace", index=False)
        conn.commit()
    return Timed(len(out))


def work_polars_adbc(args: WorkerArgs) -> Timed:
    """polars over ADBC: Arrow end to end except the numpy matrix the model needs."""
    import polars as pl

    model = load_model()
    df = pl.read_database_uri(HAND_QUERY, args.url, engine="adbc")
    scores = _scores(model, df.select(FEATURES).to_numpy())
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
    """Floor part 2: predict_proba alone, on the window already in a numpy array (loading untimed)."""
    import adbc_driver_postgresql.dbapi as adbc
    import numpy as np

    model = load_model()
    with adbc.connect(args.url) as conn, conn.cursor() as cur:
        cur.execute(HAND_QUERY)
        table = cur.fetch_arrow_table()
    x = np.column_stack([table.column(name).to_numpy() for name in FEATURES])
    del table
    started = time.perf_counter()
    _scores(model, x)
    return Timed(0, time.perf_counter() - started)


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


def engine_config(part_rows: int | None, batch_rows: int | None) -> Any:
    """The bench pipeline, built in code; execution defaults unless the CLI overrides part/batch rows."""
    from batchscore.config import PipelineConfig

    execution = {k: v for k, v in {"slice_rows": part_rows, "batch_rows": batch_rows}.items() if v is not None}
    return PipelineConfig.model_validate(
        {
            "name": "bench",
            "start_date": WINDOW_START.date().isoformat(),
            "source": {"conn_id": "bench_db", "query": ENGINE_QUERY},
            "entity_key": "id",
            "features": list(FEATURES),
            "model": {"name": MODEL_NAME, "version": "champion"},
            "output": {"conn_id": "bench_db", "table": f"{SCHEMA}.{OUTPUT_TABLES['engine']}"},
            "validation": {"max_reject_fraction": 0.0},
            "execution": execution,
        }
    )


def engine_kwargs(run_pipeline: Callable[..., Any]) -> dict[str, Any]:
    """Only keyword arguments ``run_pipeline`` has today: ``parallel`` is passed when it exists."""
    return {"parallel": os.cpu_count()} if "parallel" in inspect.signature(run_pipeline).parameters else {}


def work_engine(args: WorkerArgs) -> Timed:
    """This pipeline's engine, all stages in one process, exactly as the command line runs it."""
    from batchscore.job import Endpoints, run_pipeline
    from batchscore.windows import Window

    endpoints = Endpoints(source_url=args.url, scores_url=args.url, registry=str(REGISTRY))
    config = engine_config(args.part_rows, args.batch_rows)
    window = Window(WINDOW_START, WINDOW_END)
    result = run_pipeline(config, endpoints, window=window, run_id=args.run_id, **engine_kwargs(run_pipeline))
    return Timed(int(result.rows_written))


WORKERS: dict[str, Callable[[WorkerArgs], Timed]] = {
    "naive": work_naive,
    "pandas_adbc": work_pandas_adbc,
    "polars_adbc": work_polars_adbc,
    "floor_copy": work_floor_copy,
    "floor_predict": work_floor_predict,
    "floor_ingest": work_floor_ingest,
    "engine": work_engine,
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
    result_file.write_text(json.dumps(result))
    return 0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (PostgreSQL included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cores_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were busy on average between two ``machine_jiffies`` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * (os.cpu_count() or 1) if total else math.nan


class ThreadCpu:
    """This process's threads' CPU seconds during the run, by role (from the thread's name).

    Threads come and go (the scoring pool's end with the run), so /proc/self/task is read
    every 100 ms and each thread's last reading kept; CPU spent before (imports) is subtracted.
    """

    ROLES: ClassVar[dict[str, str]] = {"extract": "extract", "MainThread": "plan+load", "warm-up": "warm-up"}

    def __init__(self) -> None:
        import threading

        self._tick = os.sysconf("SC_CLK_TCK")
        self._cpu: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._sample()
        self._before = dict(self._cpu)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import threading

        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._names[thread.native_id] = thread.name
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                self._cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / self._tick

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per role: extract, predict (the scoring threads), plan+load (main), warm-up, other."""
        self._stop.set()
        self._thread.join()
        self._sample()
        roles: dict[str, float] = {}
        for tid, cpu in self._cpu.items():
            name = self._names.get(tid, "")
            if name == "bench-sampler":
                continue
            role = self.ROLES.get(name, "predict" if name.startswith("predict") else "other")
            roles[role] = roles.get(role, 0.0) + cpu - self._before.get(tid, 0.0)
        return {role: round(cpu, 2) for role, cpu in sorted(roles.items())}


# --------------------------------------------------------------------------- harness (parent process)


@dataclass(frozen=True)
class Measurement:
    """One path's figures: worker-measured seconds, parent wall incl. start-up, peak tree RSS."""

    path: str
    seconds: float
    wall_seconds: float
    peak_rss_mb: float
    rows_written: int
    rounds: tuple[float, ...] = ()  # each round's seconds when the path ran more than once
    cores_busy: float = math.nan  # machine-wide average busy cores while it ran (PostgreSQL included)
    thread_cpu: dict[str, float] = field(default_factory=dict)  # the engine's CPU seconds by thread role


def tree_rss(root: psutil.Process) -> int:
    """Sum of RSS over a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # it exited meanwhile
            total += proc.memory_info().rss
    return total


def wait_with_peak_rss(proc: subprocess.Popen[bytes]) -> int:
    """Poll the worker's process tree every ~50 ms until it exits; return the peak summed RSS in bytes."""
    import psutil

    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(root))
        time.sleep(POLL_SECONDS)
    return peak


def worker_command(path: str, args: WorkerArgs, result_file: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--path", path, "--url", args.url]
    cmd += ["--rows", str(args.rows), "--table", args.table, "--run-id", args.run_id, "--result-file", str(result_file)]
    if args.part_rows is not None:
        cmd += ["--slice-rows", str(args.part_rows)]
    if args.batch_rows is not None:
        cmd += ["--batch-rows", str(args.batch_rows)]
    return cmd


def measure(path: str, args: WorkerArgs) -> Measurement:
    """Run one path in a fresh interpreter, watching its memory; fail loudly if it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        started = time.perf_counter()
        proc = subprocess.Popen(worker_command(path, args, result_file), cwd=ROOT)
        peak = wait_with_peak_rss(proc)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not result_file.exists():
            raise BenchError(f"path {path} failed (exit code {proc.returncode}); its output is above")
        result = json.loads(result_file.read_text())
    return Measurement(
        path,
        float(result["seconds"]),
        wall,
        peak / 2**20,
        int(result["rows"]),
        cores_busy=float(result["cores_busy"]),
        thread_cpu=result.get("thread_cpu", {}),
    )


def run_path(path: str, args: WorkerArgs, label: str = "") -> Measurement:
    """Drop the path's output table, settle the server, then measure the path."""
    if args.table:
        drop_table(args.url, args.table)
    settle(args.url)
    print(f"run: {path} {label}...", flush=True)
    measured = measure(path, args)
    print(f"run: {path} {label}{measured.seconds:.2f}s, peak RSS {measured.peak_rss_mb:.0f} MB", flush=True)
    return measured


def combine_floor(parts: Sequence[Measurement]) -> Measurement:
    """The floor: seconds and wall summed over its parts, peak RSS the largest part's."""
    return Measurement(
        "floor",
        sum(p.seconds for p in parts),
        sum(p.wall_seconds for p in parts),
        max(p.peak_rss_mb for p in parts),
        sum(p.rows_written for p in parts),
        cores_busy=sum(p.cores_busy * p.seconds for p in parts) / sum(p.seconds for p in parts),
    )


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything one bench run measured and checked."""

    rows: int
    paths: dict[str, Measurement]
    floor_parts: dict[str, Measurement]
    rows_in_tables: dict[str, int | None]
    warnings: list[str]
    run_pipeline_kwargs: list[str]

    def seconds(self, path: str) -> float:
        return self.paths[path].seconds if path in self.paths else math.nan

    def summary(self) -> dict[str, float]:
        engine = self.seconds("engine")
        hand = [self.seconds(p) for p in ("pandas_adbc", "polars_adbc") if p in self.paths]
        best = min(hand) if hand else math.nan
        return {
            "best_handwritten_seconds": best,
            "speedup_vs_naive": self.seconds("naive") / engine,
            "speedup_vs_best_handwritten": best / engine,
            "fraction_of_floor": self.seconds("floor") / engine,
            "peak_rss_mb": self.paths["engine"].peak_rss_mb if "engine" in self.paths else math.nan,
        }


def format_table(report: Report) -> str:
    """path | median seconds | wall incl. start-up | peak RSS MB | rows written | vs engine | busy cores | rounds."""
    engine = report.seconds("engine")
    header = (
        f"{'path':<16}{'seconds':>10}{'wall s':>10}{'peak RSS MB':>13}{'rows written':>15}{'vs engine':>11}"
        f"{'cores busy':>12}  {'rounds (s)'}"
    )
    lines = [header, "-" * len(header)]

    def line(name: str, m: Measurement) -> str:
        ratio = m.seconds / engine
        return (
            f"{name:<16}{m.seconds:>10.2f}{m.wall_seconds:>10.2f}{m.peak_rss_mb:>13.0f}"
            f"{m.rows_written:>15,}{ratio:>10.2f}x{m.cores_busy:>12.2f}  {' '.join(f'{r:.2f}' for r in m.rounds)}"
        )

    for path, m in report.paths.items():
        lines.append(line(path + (" (sum)" if path == "floor" else ""), m))
        if path == "floor":
            lines += [line("  " + part.removeprefix("floor_"), report.floor_parts[part]) for part in FLOOR_PARTS]
    return "\n".join(lines)


def where_the_time_goes(report: Report) -> str:
    """The engine's CPU seconds by thread role, and what the rest of the machine (PostgreSQL) used meanwhile."""
    engine = report.paths.get("engine")
    if engine is None or not engine.thread_cpu:
        return ""
    busy = engine.cores_busy * engine.seconds
    ours = sum(engine.thread_cpu.values())
    roles = ", ".join(f"{role} {cpu:.1f}" for role, cpu in engine.thread_cpu.items())
    return (
        f"engine CPU seconds by thread: {roles}; PostgreSQL and the rest of the machine {busy - ours:.1f}; "
        f"{engine.cores_busy:.2f} of {os.cpu_count()} cores busy on average"
    )


def dag_summary(report: Report, airflow: dict[str, Any] | None) -> dict[str, Any]:
    """The DAG path against the best script and the engine, measured in the same run (empty without it)."""
    if airflow is None:
        return {}
    s = report.summary()
    engine = report.paths.get("engine")
    best = s["best_handwritten_seconds"]
    return {
        "dag_seconds": airflow["seconds"],
        "dag_speedup_vs_best_handwritten": best / airflow["seconds"] if best and not math.isnan(best) else math.nan,
        "dag_vs_engine": airflow["seconds"] / engine.seconds if engine else math.nan,
        "dag_task_seconds": airflow["task_seconds"],
    }


def result_line(report: Report, airflow: dict[str, Any] | None = None) -> str:
    s = report.summary()
    rss = "nan" if math.isnan(s["peak_rss_mb"]) else str(round(s["peak_rss_mb"]))
    line = (
        f"RESULT rows={report.rows} speedup_vs_naive={s['speedup_vs_naive']:.2f} "
        f"speedup_vs_best_handwritten={s['speedup_vs_best_handwritten']:.2f} "
        f"fraction_of_floor={s['fraction_of_floor']:.2f} peak_rss_mb={rss}"
    )
    dag = dag_summary(report, airflow)
    if dag:
        speedup = dag["dag_speedup_vs_best_handwritten"]
        line += f" dag_seconds={dag['dag_seconds']:.1f} dag_speedup_vs_best_handwritten={speedup:.2f}"
    return line


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_json(report: Report, airflow: dict[str, Any] | None = None) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench-{report.rows}.json"
    data = {
        "rows": report.rows,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "summary": report.summary() | dag_summary(report, airflow),
        "paths": {name: asdict(m) for name, m in report.paths.items()},
        "floor_parts": {name: asdict(m) for name, m in report.floor_parts.items()},
        "rows_in_tables": report.rows_in_tables,
        "run_pipeline_kwargs": report.run_pipeline_kwargs,
        "warnings": report.warnings,
    }
    out.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- checks


def check_rows(report: Report) -> None:
    """Each writing path must have written exactly the window's rows."""
    for path, count in report.rows_in_tables.items():
        if count != report.rows:
            report.warnings.append(f"{path} wrote {count} rows to its table, expected {report.rows}")


def check_scores(report: Report, samples: dict[str, dict[int, float]], ids: Sequence[int]) -> None:
    """The engine's scores equal pandas_adbc's on a fixed sample of ids."""
    if "engine" not in samples or "pandas_adbc" not in samples:
        print("note: score comparison skipped (needs both pandas_adbc and engine)")
        return
    engine, reference = samples["engine"], samples["pandas_adbc"]
    missing = [i for i in ids if i not in engine or i not in reference]
    if missing:
        report.warnings.append(f"score check: {len(missing)} of {len(ids)} sampled ids missing from a table")
        return
    diff = max(abs(engine[i] - reference[i]) for i in ids)
    if not diff < MAX_SCORE_DIFF:
        report.warnings.append(f"score check: engine vs pandas_adbc max abs diff {diff:.3g} >= {MAX_SCORE_DIFF}")
    else:
        print(f"check: engine scores equal pandas_adbc's on {len(ids)} sampled ids (max abs diff {diff:.1e})")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the window (default 2,000,000)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive path (minutes at 2M+ rows)")
    parser.add_argument("--paths", default="a,b,c,d,e", help="paths to run: letters a-e or names (default all)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the table and retrain the model")
    parser.add_argument(
        "--slice-rows", "--part-rows", dest="part_rows", type=int, default=None, help="execution.slice_rows"
    )
    parser.add_argument("--batch-rows", type=int, default=None, help="engine execution.batch_rows")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of each path but naive, interleaved; medians reported (default 3)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then one untimed engine run under py-spy: CPU by stage and function"
    )
    parser.add_argument("--keep-server", action="store_true", help="leave the bench PostgreSQL running")
    parser.add_argument(
        "--through-airflow", action="store_true", help="also time the window through the DAG on a real scheduler"
    )
    # Worker mode: the harness re-runs this script with --path for each measurement.
    parser.add_argument("--path", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--table", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < SAMPLE_IDS:
        parser.error(f"--rows must be at least {SAMPLE_IDS}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def selected_paths(spec: str, skip_naive: bool) -> list[str]:
    """``a,b,...`` or path names, in the canonical order a..e (``none``: only --through-airflow)."""
    if spec.strip() in ("", "none"):
        return []
    names = {PATH_LETTERS.get(item.strip(), item.strip()) for item in spec.split(",") if item.strip()}
    unknown = names - set(PATH_LETTERS.values())
    if unknown:
        raise SystemExit(f"unknown path(s): {', '.join(sorted(unknown))}; choose from {PATH_LETTERS}")
    if skip_naive:
        names.discard("naive")
    return [name for name in PATH_LETTERS.values() if name in names]


def median_of(runs: Sequence[Measurement]) -> Measurement:
    """One path over several rounds: the median seconds and wall, the largest peak RSS, every round kept."""
    return Measurement(
        runs[0].path,
        statistics.median(m.seconds for m in runs),
        statistics.median(m.wall_seconds for m in runs),
        max(m.peak_rss_mb for m in runs),
        runs[-1].rows_written,
        tuple(round(m.seconds, 3) for m in runs),
        statistics.median(m.cores_busy for m in runs),
        min(runs, key=lambda m: abs(m.seconds - statistics.median(r.seconds for r in runs))).thread_cpu,
    )


def run_all(paths: Sequence[str], url: str, ns: argparse.Namespace) -> Report:
    """Measure every selected path on the same window, ``--repeat`` rounds interleaved (naive once).

    Interleaving puts each path's rounds under the same machine conditions as the others',
    and the median resists the odd slow round on a shared machine. Each output is counted
    and sampled, then dropped.
    """
    from batchscore.job import run_pipeline

    run_id = f"bench-{ns.rows}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    report = Report(ns.rows, {}, {}, {}, [], sorted(engine_kwargs(run_pipeline)))
    ids = sample_ids(ns.rows)
    samples: dict[str, dict[int, float]] = {}
    rounds: dict[str, list[Measurement]] = {}
    for index in range(ns.repeat):
        for path in paths:
            if path == "naive" and index > 0:
                continue  # minutes per round, and an order of magnitude away: once is enough
            for worker in FLOOR_PARTS if path == "floor" else (path,):
                table = OUTPUT_TABLES.get(worker, "")
                args = WorkerArgs(url, ns.rows, table, f"{run_id}-{index}", ns.part_rows, ns.batch_rows)
                rounds.setdefault(worker, []).append(run_path(worker, args, f"round {index + 1}/{ns.repeat} "))
                if table:
                    report.rows_in_tables[worker] = table_rows(url, table)
                    samples[worker] = sample_scores(url, table, ids)
                    drop_table(url, table)
    for path in paths:
        if path == "floor":
            report.floor_parts = {part: median_of(rounds[part]) for part in FLOOR_PARTS}
            report.paths[path] = combine_floor(list(report.floor_parts.values()))
        else:
            report.paths[path] = median_of(rounds[path])
    check_rows(report)
    check_scores(report, samples, ids)
    return report


def airflow_measurement(url: str, ns: argparse.Namespace) -> dict[str, Any]:
    """The same window through the scoring DAG on a real scheduler (see bench_airflow.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_airflow import through_airflow

    drop_table(url, "airflow_scores")
    RESULTS_DIR.mkdir(exist_ok=True)
    return through_airflow(
        url=url,
        bench_dir=BENCH_DIR,
        registry=REGISTRY,
        query=ENGINE_QUERY,
        features=list(FEATURES),
        rows=ns.rows,
        window=(WINDOW_START, WINDOW_END),
        part_rows=ns.part_rows,
    )


def profile_measurement(url: str, ns: argparse.Namespace) -> str:
    """One more engine run, under py-spy (not timed: sampling slows it a little); its summary."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_profile import profile, summarize

    table = OUTPUT_TABLES["engine"]
    args = WorkerArgs(
        url, ns.rows, table, f"bench-profile-{datetime.now(UTC):%Y%m%dT%H%M%S}", ns.part_rows, ns.batch_rows
    )
    drop_table(url, table)
    settle(url)
    print("run: engine under py-spy ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = profile(
            worker_command("engine", args, Path(tmp) / "result.json"), RESULTS_DIR / f"engine-{ns.rows}.folded"
        )
    drop_table(url, table)
    return f"{summarize(out)}\n  stacks: {out.relative_to(ROOT)} (collapsed; e.g. flamegraph.pl or speedscope.app)"


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.path:
        args = WorkerArgs(ns.url, ns.rows, ns.table, ns.run_id, ns.part_rows, ns.batch_rows)
        return run_worker_mode(ns.path, args, ns.result_file)
    paths = selected_paths(ns.paths, ns.skip_naive)
    pg = start_server()
    try:
        url = pg.url(DATABASE)
        generated = ensure_features(url, ns.rows, ns.regenerate)
        ensure_model(retrain=ns.regenerate)
        if not generated:
            warm_cache(url)
        report = run_all(paths, url, ns) if paths else None
        airflow = airflow_measurement(url, ns) if ns.through_airflow else None
        profiled = profile_measurement(url, ns) if ns.profile else None
    finally:
        if not ns.keep_server:
            pg.stop()
    if airflow is not None:
        print(f"\nthrough Airflow (LocalExecutor): trigger to success {airflow['seconds']:.1f}s for {ns.rows:,} rows")
        print("  task seconds: " + ", ".join(f"{k} {v}" for k, v in airflow["task_seconds"].items()))
        (RESULTS_DIR / f"bench-airflow-{ns.rows}.json").write_text(json.dumps(airflow, indent=2))
    if profiled is not None:
        print(f"\n{profiled}")
    if report is None:
        return 0
    print()
    print(format_table(report))
    s = report.summary()
    print(
        f"\nbest_handwritten={s['best_handwritten_seconds']:.2f}s  speedup_vs_naive={s['speedup_vs_naive']:.2f}  "
        f"speedup_vs_best_handwritten={s['speedup_vs_best_handwritten']:.2f}  "
        f"fraction_of_floor={s['fraction_of_floor']:.2f}  run_pipeline extra kwargs: {report.run_pipeline_kwargs}"
    )
    print(where_the_time_goes(report))
    if ns.keep_server:
        print(f"server kept running: {url}")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    dag = dag_summary(report, airflow)
    if dag:
        print(
            f"dag: trigger to success {dag['dag_seconds']:.1f}s = {dag['dag_speedup_vs_best_handwritten']:.2f}x "
            f"the best hand-written script, {dag['dag_vs_engine']:.2f}x the engine's time"
        )
    print(f"results: {write_json(report, airflow).relative_to(ROOT)}")
    print(result_line(report, airflow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
