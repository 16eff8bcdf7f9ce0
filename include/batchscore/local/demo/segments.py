"""Train the demo customer segments (KMeans) on a sample of a warehouse window and register them.

The clusterer of the demo: median imputation, standard scaling and KMeans on the numeric
activity features, in one Pipeline, so a run's label is the segment id. The demo's features
are drawn independently, so the segments are a partition of the customer space rather than
hidden groups: the silhouette is low, and the manifest says so. Each segment's centre, in the
features' own units, goes into the manifest's training metadata so a segment id can be read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchscore.local.demo.model import feature_specs, read_training_window
from batchscore.models.intake import reference_frame
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.scoring.drift import drift_reference
from batchscore.scoring.features import to_model_frame

SEGMENT_FEATURES = (
    "tenure_days",
    "monthly_spend",
    "txn_count_7d",
    "txn_amount_7d",
    "avg_session_minutes",
    "days_since_last_login",
    "support_tickets_30d",
)
SILHOUETTE_ROWS = 5_000  # silhouette is quadratic in rows: measured on a sample


def build_estimator(n_clusters: int = 4) -> Any:
    from sklearn.cluster import KMeans
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", KMeans(n_clusters=n_clusters, n_init=4, random_state=0)),
        ]
    )


def train_and_register(
    url: str,
    registry_root: str,
    *,
    train: Window,
    name: str = "segments",
    n_clusters: int = 4,
    sample_rows: int = 50_000,
    aliases: tuple[str, ...] = ("champion",),
) -> ModelManifest:
    """Fit on a uniform sample of at most ``sample_rows`` of ``train``'s rows (seeded, so repeatable), register.

    Metrics: the sample's inertia (and per row) and the silhouette on ``SILHOUETTE_ROWS`` of it.
    """
    from sklearn.metrics import silhouette_score

    table = read_training_window(url, train)
    rng = np.random.default_rng(0)
    if table.num_rows > sample_rows:
        table = table.take(np.sort(rng.choice(table.num_rows, sample_rows, replace=False)))
    specs = feature_specs(table, categorical=(), numeric=SEGMENT_FEATURES)
    frame = to_model_frame(table, specs)
    estimator = build_estimator(n_clusters).fit(frame)
    kmeans = estimator.named_steps["model"]
    scaled = estimator[:-1].transform(frame)
    labels = kmeans.labels_
    picked = rng.choice(len(frame), min(SILHOUETTE_ROWS, len(frame)), replace=False)
    centres = estimator.named_steps["scale"].inverse_transform(kmeans.cluster_centers_)
    sizes = np.bincount(labels, minlength=n_clusters)
    metrics = {
        "n_clusters": float(n_clusters),
        "inertia": float(kmeans.inertia_),
        "inertia_per_row": float(kmeans.inertia_ / len(frame)),
        "silhouette": float(silhouette_score(scaled[picked], labels[picked])),
        "silhouette_rows": float(len(picked)),
    }
    training = {
        "window_start": train.start.isoformat(),
        "window_end": train.end.isoformat(),
        "rows": len(frame),
        "source": "warehouse.customer_activity",
        "segments": {
            str(k): {
                "share": round(float(sizes[k] / len(frame)), 4),
                "centre": {f: round(float(v), 2) for f, v in zip(SEGMENT_FEATURES, centres[k], strict=True)},
            }
            for k in range(n_clusters)
        },
    }
    # The training sample is the drift reference: its features and its rows per segment.
    reference = drift_reference(
        estimator, specs, reference_frame(table, specs, name), source=f"training window {train}, {len(frame):,} rows"
    )
    return ModelRegistry(registry_root).register(
        name, estimator, specs, training=training, metrics=metrics, aliases=aliases, reference=reference
    )
