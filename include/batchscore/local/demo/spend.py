"""Train the demo spend model (expected spend over the next 30 days) on a warehouse window and register it.

The regressor of the demo: the churn model's features and preprocessing, then a
HistGradientBoostingRegressor (so runs score it with the compiled tree walk). Fitted on one
window of ``spend_next_30d`` outcomes, evaluated on the next window of the same length, with
the ground-truth rule's own R² and MAE on that holdout as the ceiling.
"""

from __future__ import annotations

from typing import Any

from batchscore.local.demo.model import accepted_rows, feature_specs, preprocessing, read_training_window, read_window
from batchscore.local.demo.warehouse import true_spend_30d
from batchscore.models.intake import reference_frame
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.scoring.drift import drift_reference
from batchscore.scoring.features import to_model_frame

TARGET = "spend_next_30d"


def build_estimator(max_iter: int = 100) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [("prep", preprocessing()), ("model", HistGradientBoostingRegressor(max_iter=max_iter, random_state=0))]
    )


def train_and_register(
    url: str,
    registry_root: str,
    *,
    train: Window,
    name: str = "spend",
    max_iter: int = 100,
    aliases: tuple[str, ...] = ("champion",),
) -> ModelManifest:
    """Fit on ``train``'s accepted rows, evaluate on the following window of the same length, register."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    holdout = Window(train.end, train.end + train.duration)
    train_table = accepted_rows(read_training_window(url, train))
    specs = feature_specs(train_table)
    estimator = build_estimator(max_iter).fit(to_model_frame(train_table, specs), train_table.column(TARGET).to_numpy())
    test_table = accepted_rows(read_window(url, holdout))
    frame = to_model_frame(test_table, specs)
    y = test_table.column(TARGET).to_numpy()
    predicted = estimator.predict(frame)
    truth = true_spend_30d({c: frame[c].to_numpy() for c in frame.columns})
    metrics = {
        "holdout_rows": float(len(y)),
        "holdout_r2": float(r2_score(y, predicted)),
        "holdout_mae": float(mean_absolute_error(y, predicted)),
        "holdout_rmse": float(mean_squared_error(y, predicted) ** 0.5),
        "holdout_bias": float((predicted - y).mean()),
        "ground_truth_rule_r2": float(r2_score(y, truth)),
        "ground_truth_rule_mae": float(mean_absolute_error(y, truth)),
        "holdout_mean_spend": float(y.mean()),
    }
    training = {
        "window_start": train.start.isoformat(),
        "window_end": train.end.isoformat(),
        "rows": train_table.num_rows,
        "target": TARGET,
        "holdout_window_start": holdout.start.isoformat(),
        "holdout_window_end": holdout.end.isoformat(),
        "source": "warehouse.customer_activity",
    }
    # The training rows are the drift reference, as for churn: features and the predicted spend.
    reference = drift_reference(
        estimator, specs, reference_frame(train_table, specs, name), source=f"training window {train}"
    )
    return ModelRegistry(registry_root).register(
        name, estimator, specs, training=training, metrics=metrics, aliases=aliases, reference=reference
    )
