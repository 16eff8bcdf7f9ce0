"""The bench's data: one window of feature rows in a dedicated embedded PostgreSQL, and its model.

The rows are generated chunk by chunk from fixed seeds (each chunk reproducible alone) and
the model is trained on different rows from the same distribution, so every path scores
the same window with the same model and the scores can be compared across paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import psycopg
    import pyarrow as pa

    from batchscore.local.embedded_pg import EmbeddedPostgres

import os
import time

ROOT = Path(__file__).resolve().parents[2]
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

# --model pipeline (BENCH_MODEL=pipeline in the workers): the demo's shape, ColumnTransformer(imputer,
# one-hot) -> HistGradientBoostingClassifier, over the numbers and a text column the query derives
# from f19 (NULL past 2.5: the imputer's business), named so a registry holds both models.
MODEL_KIND = os.environ.get("BENCH_MODEL", "trees")
if MODEL_KIND not in ("trees", "pipeline"):
    raise SystemExit(f"BENCH_MODEL must be trees or pipeline, not {MODEL_KIND!r}")
PIPELINE = MODEL_KIND == "pipeline"
if PIPELINE:
    MODEL_NAME = "bench_pipeline"
CATEGORICAL = ("plan",) if PIPELINE else ()
MODEL_FEATURES = (*FEATURES, *CATEGORICAL)
PLAN_SQL = "CASE WHEN f19 < -0.8 THEN 'basic' WHEN f19 < 0.3 THEN 'plus' WHEN f19 < 2.5 THEN 'gold' END AS plan"
ENGINE_QUERY = (
    f"SELECT id, {', '.join([*FEATURES, *([PLAN_SQL] if PIPELINE else [])])} FROM {SCHEMA}.features "
    "WHERE event_time >= :window_start AND event_time < :window_end"
)
# Hand-written paths run the same query with the bounds as literals (COPY and polars take no parameters).
HAND_QUERY = ENGINE_QUERY.replace(":window_start", f"'{WINDOW_START.isoformat()}'::timestamptz").replace(
    ":window_end", f"'{WINDOW_END.isoformat()}'::timestamptz"
)

PATH_LETTERS = {
    "a": "naive",
    "b": "pandas_adbc",
    "c": "polars_adbc",
    "d": "floor",
    "e": "engine",
    "f": "engine_no_drift",
}
FLOOR_PARTS = ("floor_copy", "floor_predict", "floor_ingest")
OUTPUT_TABLES = {
    "naive": "out_naive",
    "pandas_adbc": "out_pandas_adbc",
    "polars_adbc": "out_polars_adbc",
    "floor_ingest": "out_floor",
    "engine": "bench_scores",
    "engine_no_drift": "bench_scores_no_drift",
}
# Imported before a worker's clock starts, so every path times its work, not its imports.


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


def plan_column(f19: np.ndarray) -> np.ndarray:
    """The text column PLAN_SQL derives, computed in numpy for the training rows (None where SQL gives NULL)."""
    import numpy as np

    return np.select([f19 < -0.8, f19 < 0.3, f19 < 2.5], ["basic", "plus", "gold"], default=None).astype(object)


def pipeline_model() -> Any:
    """ColumnTransformer(median imputer on the numbers, constant imputer + one-hot on plan) -> the same trees."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categories = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    prep = ColumnTransformer(
        [("numbers", SimpleImputer(strategy="median"), list(FEATURES)), ("categories", categories, list(CATEGORICAL))]
    )
    return make_pipeline(prep, HistGradientBoostingClassifier(max_iter=100, random_state=0))


def train_model() -> tuple[Any, pa.Table]:
    """The bench model fitted on fresh named rows (as the engine feeds it), and those rows."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(TRAIN_SEED)
    x = generate_features(rng, TRAIN_ROWS)
    y = true_label(rng, x)
    frame = pd.DataFrame(x, columns=list(FEATURES))
    if PIPELINE:
        frame["plan"] = plan_column(x[:, 19])
    model = pipeline_model() if PIPELINE else HistGradientBoostingClassifier(max_iter=100, random_state=0)
    model.fit(frame, y)
    columns = {name: pa.array(frame[name].to_numpy()) for name in FEATURES}
    if PIPELINE:
        columns["plan"] = pa.array([v if isinstance(v, str) else None for v in frame["plan"]], pa.string())
    return model, pa.table(columns)


def load_model() -> Any:
    """The registered champion, loaded as the engine loads it (sha256 check, skops allowlist)."""
    from batchscore.models.registry import ModelRegistry

    registry = ModelRegistry(str(REGISTRY))
    return registry.load(registry.resolve(MODEL_NAME, "champion"))


def ensure_model(retrain: bool) -> None:
    """Register the bench model as champion unless one exists (or when regenerating)."""
    from batchscore.models.intake import reference_frame
    from batchscore.models.registry import FeatureSpec, ModelRegistry
    from batchscore.scoring.drift import drift_reference

    registry = ModelRegistry(str(REGISTRY))
    aliases = registry.aliases(MODEL_NAME)
    if not retrain and "champion" in aliases and registry.resolve(MODEL_NAME, "champion").reference is not None:
        return  # (a champion registered before drift existed has no reference: registered again)
    specs = tuple(FeatureSpec(name, "numeric") for name in FEATURES)
    specs += tuple(FeatureSpec(name, "categorical") for name in CATEGORICAL)
    model, training = train_model()
    reference = drift_reference(model, specs, reference_frame(training, specs, "bench"), source="bench training rows")
    manifest = registry.register(MODEL_NAME, model, specs, aliases=("champion",), reference=reference)
    print(f"setup: registered model {MODEL_NAME} v{manifest.version} as champion (with a drift reference)", flush=True)


# --------------------------------------------------------------------------- database


def running_port(datadir: Path) -> int | None:
    """The port of a bench server still running from an earlier ``--keep-server`` run, if any."""
    from batchscore.local.embedded_pg import EmbeddedPostgres

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
    from batchscore.local.embedded_pg import EmbeddedPostgres, free_port

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
    ensure_key_index(url)
    # VACUUM as well as ANALYZE: it sets hint bits and the visibility map now, so the first
    # path to read the table does not pay for that (with data checksums, in WAL too).
    with connect(url) as conn:
        conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.features")


def ensure_key_index(url: str) -> None:
    """Give ``bench.features`` its primary key on ``id``, as a warehouse's table of events has.

    A slice of the DAG is a key range around the window's query: with the key indexed, each
    slice's query reads its own range; without, every slice scans the whole window.
    """
    with connect(url) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary", (f"{SCHEMA}.features",)
        ).fetchone()
        if found is None:
            conn.execute(f"ALTER TABLE {SCHEMA}.features ADD PRIMARY KEY (id)")
            conn.execute(f"ANALYZE {SCHEMA}.features")


def ensure_features(url: str, rows: int, regenerate: bool) -> bool:
    """Make ``bench.features`` hold exactly ``rows`` rows; True when it was (re)generated."""
    with connect(url) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    if not regenerate and table_rows(url, "features") == rows:
        print(f"setup: reusing {SCHEMA}.features ({rows:,} rows)", flush=True)
        ensure_key_index(url)
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


def drift_figures(url: str, run_id: str) -> dict[str, float]:
    """An engine run's drift counting against its scoring, in thread-seconds, from its run record."""
    import psycopg

    from batchscore import db

    with psycopg.connect(db.libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum((s->>'drift_seconds')::float8), 0), coalesce(sum((s->>'score_seconds')::float8), 0), "
            "max(r.drift_max_psi) FROM scoring.scoring_runs r, jsonb_array_elements(r.slices) s WHERE r.run_id = %s",
            (run_id,),
        ).fetchone()
    drift, scoring, max_psi = row if row else (0.0, 0.0, None)
    return {"drift_thread_seconds": float(drift), "score_thread_seconds": float(scoring), "max_psi": max_psi}
