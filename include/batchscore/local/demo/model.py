"""Train the demo churn model on a warehouse window and register it (and what the other demo models share).

A scikit-learn Pipeline (imputation and one-hot encoding for categories, then a
HistGradientBoostingClassifier that handles missing numbers itself), fitted on one
window and evaluated on the next, with the ground-truth rule's own AUC as the ceiling.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore import db
from batchscore.local.demo.warehouse import CATEGORICAL_FEATURES, NEW_REGION, NUMERIC_FEATURES, true_churn_logit
from batchscore.models.intake import reference_frame
from batchscore.models.manifest import FeatureSpec, ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.scoring.drift import drift_reference
from batchscore.scoring.features import to_model_frame

NOT_NULL_CATEGORIES = {"plan", "region"}
OUTCOMES = ("churned", "spend_next_30d")


def read_window(url: str, window: Window) -> pa.Table:
    """Features and outcomes (``churned``, ``spend_next_30d``) for a window, as Arrow (binary COPY through ADBC)."""
    import adbc_driver_postgresql.dbapi as adbc

    columns = ", ".join(("customer_id", *CATEGORICAL_FEATURES, *NUMERIC_FEATURES, *OUTCOMES))
    with adbc.connect(db.libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {columns} FROM warehouse.customer_activity WHERE event_time >= $1 AND event_time < $2",  # noqa: S608 (constant column names; the window is bound)
            parameters=(window.start, window.end),
        )
        return cur.fetch_arrow_table()


def read_training_window(url: str, window: Window) -> pa.Table:
    """:func:`read_window`, refusing an empty window (the warehouse was not seeded that far back)."""
    table = read_window(url, window)
    if table.num_rows == 0:
        raise ValueError(f"no rows in the training window {window}: seed the warehouse first")
    return table


def accepted_rows(table: pa.Table, *, seen_regions_only: bool = True) -> pa.Table:
    """The rows a production run would score: known plan and region (and, by default, not the newest region).

    The newest region "launched" after the demo models were trained, so scoring runs see it
    as an unseen category and reject it; training leaves it out for the same reason.
    """
    import pyarrow.compute as pc

    keep = pc.and_(pc.is_valid(table.column("plan")), pc.is_valid(table.column("region")))
    if seen_regions_only:
        keep = pc.and_(keep, pc.not_equal(table.column("region"), NEW_REGION))
    return table.filter(keep)


def preprocessing() -> Any:
    """Numbers as they are (the boosted trees handle missing ones), categories imputed and one-hot encoded.

    Unknown categories encode as all zeros; the pipeline's validation rejects them before they get here.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categories = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [("num", "passthrough", list(NUMERIC_FEATURES)), ("cat", categories, list(CATEGORICAL_FEATURES))],
        verbose_feature_names_out=False,
    )


def build_estimator(max_iter: int = 100) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [("prep", preprocessing()), ("model", HistGradientBoostingClassifier(max_iter=max_iter, random_state=0))]
    )


def feature_specs(
    train: pa.Table,
    categorical: tuple[str, ...] = CATEGORICAL_FEATURES,
    numeric: tuple[str, ...] = NUMERIC_FEATURES,
) -> tuple[FeatureSpec, ...]:
    """Categorical features carry the categories seen in training (for the unseen-category check)."""
    import pyarrow.compute as pc

    specs = [
        FeatureSpec(
            name,
            "categorical",
            nullable=name not in NOT_NULL_CATEGORIES,
            categories=tuple(sorted(v for v in pc.unique(train.column(name)).to_pylist() if v is not None)),
            source_type=str(train.schema.field(name).type),
        )
        for name in categorical
    ]
    specs += [
        FeatureSpec(name, "numeric", nullable=True, source_type=str(train.schema.field(name).type)) for name in numeric
    ]
    return tuple(specs)


def train_and_register(
    url: str,
    registry_root: str,
    *,
    train: Window,
    name: str = "churn",
    max_iter: int = 100,
    aliases: tuple[str, ...] = ("champion",),
) -> ModelManifest:
    """Fit on ``train``, evaluate on the following window of the same length, register."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    holdout = Window(train.end, train.end + timedelta(seconds=train.duration.total_seconds() / 2))
    train_table = accepted_rows(read_training_window(url, train))
    specs = feature_specs(train_table)
    estimator = build_estimator(max_iter).fit(
        to_model_frame(train_table, specs), train_table.column("churned").to_numpy().astype(int)
    )
    test_table = accepted_rows(read_window(url, holdout), seen_regions_only=False)
    frame = to_model_frame(test_table, specs)
    y = test_table.column("churned").to_numpy().astype(int)
    proba = estimator.predict_proba(frame)[:, 1]
    truth = 1 / (1 + np.exp(-true_churn_logit({c: frame[c].to_numpy() for c in frame.columns})))
    metrics = {
        "holdout_rows": float(len(y)),
        "holdout_roc_auc": float(roc_auc_score(y, proba)),
        "holdout_log_loss": float(log_loss(y, proba)),
        "holdout_pr_auc": float(average_precision_score(y, proba)),
        "holdout_brier": float(brier_score_loss(y, proba)),
        "ground_truth_rule_roc_auc": float(roc_auc_score(y, truth)),
        "holdout_churn_rate": float(y.mean()),
    }
    training = {
        "window_start": train.start.isoformat(),
        "window_end": train.end.isoformat(),
        "rows": train_table.num_rows,
        "holdout_window_start": holdout.start.isoformat(),
        "holdout_window_end": holdout.end.isoformat(),
        "source": "warehouse.customer_activity",
    }
    # The training rows are the drift reference: each run's features and scores are compared with them.
    reference = drift_reference(
        estimator,
        specs,
        reference_frame(train_table, specs, name),
        source=f"training window {train}",
        positive_class="1",
    )
    return ModelRegistry(registry_root).register(
        name,
        estimator,
        specs,
        training=training,
        metrics=metrics,
        positive_class="1",
        aliases=aliases,
        reference=reference,
    )
