"""Independent computations the integration and end-to-end tests compare the pipeline against."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig, load_config
from batchscore.pipeline.table_names import lineage_view

REPO = Path(__file__).resolve().parents[2]


def churn_config(**changes: object) -> PipelineConfig:
    config = load_config(REPO / "include" / "pipelines" / "churn.yaml")
    return config.model_copy(update=changes) if changes else config


def churn_variant(name: str, query: str, **validation: object) -> PipelineConfig:
    """churn under another name, reading ``query``, writing ``scoring.<name>_scores``, with validation changes."""
    base = churn_config()
    return base.model_copy(
        update={
            "name": name,
            "source": base.source.model_copy(update={"query": query}),
            "output": base.output.model_copy(update={"table": f"scoring.{name}_scores"}),
            "validation": base.validation.model_copy(update=validation),
        }
    )


def window_rows(warehouse_url: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Every warehouse row of [start, end), read with psycopg (not the engine's extract path)."""
    with psycopg.connect(warehouse_url) as conn:
        cur = conn.execute(
            "SELECT * FROM warehouse.customer_activity WHERE event_time >= %s AND event_time < %s", (start, end)
        )
        return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])


def model_input(rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The features as a scikit-learn user would pass them: floats, and objects with NaN for missing categories."""
    return pd.DataFrame(
        {
            c: (
                rows[c].astype(object).where(rows[c].notna(), np.nan)
                if rows[c].dtype == object or isinstance(rows[c].dtype, pd.StringDtype)
                else rows[c].astype(float)
            )
            for c in features
        }
    )


def expected_scores(
    warehouse_url: str, registry: str, start: datetime, end: datetime, model: tuple[str, str] = ("churn", "champion")
) -> tuple[pd.DataFrame, set[int]]:
    """The model's own predict_proba on the window's rows, read here with psycopg and pandas.

    Returns (scores indexed by customer_id, ids that validation must reject). The reject
    rule is restated from the demo's data contract: plan is NOT NULL, region was seen in training.
    ``model``: (name, version or alias) of a churn-like model.
    """
    manifest = ModelRegistry(registry).resolve(*model)
    model = ModelRegistry(registry).load(manifest)
    regions = next(f.categories for f in manifest.features if f.name == "region")
    frame = window_rows(warehouse_url, start, end)
    bad = frame["plan"].isna() | ~frame["region"].isin(regions)
    good = frame[~bad]
    x = model_input(good, [f.name for f in manifest.features])
    proba = model.predict_proba(x)[:, list(model.classes_).index(1)]
    expected = pd.DataFrame({"customer_id": good["customer_id"].to_numpy(), "score": proba}).set_index("customer_id")
    return expected, set(frame.loc[bad, "customer_id"].astype(int))


def stored_scores(scores_url: str, table: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The window's stored scores by customer_id, in key order (empty before the table exists).

    Ordered, so two reads compare equal whatever order a scan returns (a failed load's dead rows,
    a re-attached slice, a parallel scan change it).
    """
    with psycopg.connect(scores_url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:  # type: ignore[index]
            columns = ["customer_id", "score", "label", "model_name", "model_version", "model_sha256", "run_id"]
            return pd.DataFrame(columns=columns).set_index("customer_id")
        view = f"{table.split('.', maxsplit=1)[0]}.{lineage_view(table)}"  # each score joined to its run and model
        cur = conn.execute(
            f"SELECT customer_id, score, label, model_name, model_version, model_sha256, run_id "
            f"FROM {view} WHERE window_start = %s AND window_end = %s ORDER BY customer_id",
            (start, end),
        )
        return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description]).set_index("customer_id")


def run_record(scores_url: str, pipeline: str, run_id: str) -> dict | None:
    with psycopg.connect(scores_url) as conn:
        cur = conn.execute("SELECT * FROM scoring.scoring_runs WHERE pipeline = %s AND run_id = %s", (pipeline, run_id))
        row = cur.fetchone()
        return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def count(url: str, sql: str, *params: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
        return int(row[0])
