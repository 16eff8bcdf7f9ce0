"""Predict: validate and score one batch of feature rows with the model.

Pure functions over Arrow tables: the slice runner calls :func:`score_batch` on its
worker threads, each batch independently, with one model shared by all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from batchscore.models.manifest import ModelManifest
from batchscore.scoring.compiled_trees import accelerate
from batchscore.scoring.features import ArrowRows, to_model_frame
from batchscore.scoring.validation import validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredBatch:
    """One batch's scores (key, score, label) and rejects (key, reason, row as it arrived).

    ``clean``: the validated rows the model scored, in the scores' order (for the drift counts).
    """

    scores: pa.Table
    rejects: pa.Table
    rows_in: int
    clean: pa.Table | None = None


def scores_schema(key: str, key_type: pa.DataType) -> pa.Schema:
    """What a slice loads per row: the entity key (named as in the pipeline), the score, the label."""
    return pa.schema([(key, key_type), ("score", pa.float64()), ("label", pa.string())])


def score_frame(model: Any, manifest: ModelManifest, frame: Any) -> tuple[np.ndarray | None, pa.Array | None]:
    """(score, label) for a frame, by model task.

    Classifiers: the positive class's probability (binary) or the top probability
    (multiclass), and the predicted class. Regressors: the prediction, no label.
    Clusterers: no score, the cluster id as label. Labels are built in Arrow (a take from
    the class names), never as one Python string per row.
    """
    if manifest.task == "classifier":
        proba = model.predict_proba(frame)
        classes = [str(c) for c in model.classes_]
        top = proba.argmax(axis=1)
        if manifest.positive_class is not None:
            score = proba[:, classes.index(manifest.positive_class)]
        else:
            score = proba[np.arange(len(top)), top]
        return np.ascontiguousarray(score, dtype=np.float64), pa.array(classes, pa.string()).take(top)
    if manifest.task == "regressor":
        return np.asarray(model.predict(frame), dtype=np.float64), None
    clusters = np.asarray(model.predict(frame))
    if clusters.dtype.kind in "iu":
        return None, pa.array(clusters).cast(pa.string())
    return None, pa.array(clusters.astype(str), pa.string())


def scorer(model: Any, manifest: ModelManifest) -> Any:
    """What scores the frames: the compiled tree walk when the model qualifies, else the model itself.

    A bare tree model reads the frame as one float matrix, so it qualifies with all-numeric
    features, or with the categorical encoder of its own (native categorical splits); a
    Pipeline's own steps turn categories into numbers first.
    """
    from sklearn.pipeline import Pipeline

    own_encoder = getattr(model, "_preprocessor", None) is not None
    if isinstance(model, Pipeline) or own_encoder or all(spec.kind == "numeric" for spec in manifest.features):
        return accelerate(model, [spec.name for spec in manifest.features], {s.name: s.kind for s in manifest.features})
    return model


def _scores_table(keys: pa.Array, score: np.ndarray | None, label: pa.Array | None, schema: pa.Schema) -> pa.Table:
    n = len(keys)
    return pa.Table.from_arrays(
        [
            keys,
            pa.array(score, pa.float64()) if score is not None else pa.nulls(n, pa.float64()),
            label if label is not None else pa.nulls(n, pa.string()),
        ],
        schema=schema,
    )


def score_batch(  # noqa: PLR0917 (one call site, the runner's hot path)
    table: pa.Table,
    model: Any,
    manifest: ModelManifest,
    key: str,
    unseen_categories: Literal["reject", "score"],
    schema: pa.Schema,
) -> ScoredBatch:
    """Validate one batch (conformed to the staged schema) and score its clean rows.

    ``model`` is what :func:`scorer` returned; ``schema`` is :func:`scores_schema` of the key type.
    """
    checked = validate(table, key, manifest.features, unseen_categories)
    if not checked.clean.num_rows:
        return ScoredBatch(schema.empty_table(), checked.rejects, table.num_rows, checked.clean)
    rows = ArrowRows(checked.clean, manifest.features)
    frame: Any = rows if getattr(model, "reads_arrow", False) else to_model_frame(checked.clean, manifest.features)
    score, label = score_frame(model, manifest, frame)
    keys = checked.clean.column(key).combine_chunks()
    return ScoredBatch(_scores_table(keys, score, label, schema), checked.rejects, table.num_rows, checked.clean)
