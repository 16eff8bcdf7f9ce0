"""Predict: score one staged part with the model, batch by batch, writing scores and rejects.

One call handles one part, so Airflow maps it over the parts and the executor runs them
in parallel (local processes, Celery workers or Kubernetes pods). The model is loaded
once per call by the caller and reused for every batch.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from batchscore import staging, storage
from batchscore.compiled_trees import accelerate
from batchscore.features import to_model_frame
from batchscore.progress import Progress
from batchscore.registry import ModelManifest
from batchscore.validation import REJECT_SCHEMA, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartResult:
    """What scoring one part produced; small enough for XCom."""

    part: str
    scores: str
    rejects: str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    seconds: float


def scores_schema(key_type: pa.DataType) -> pa.Schema:
    return pa.schema([("entity_key", key_type), ("score", pa.float64()), ("label", pa.string())])


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

    A bare tree model reads the frame as one float matrix, so only all-numeric features qualify;
    a Pipeline's own steps turn categories into numbers first.
    """
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) or all(spec.kind == "numeric" for spec in manifest.features):
        return accelerate(model, [spec.name for spec in manifest.features])
    return model


def _scores_table(keys: pa.Array, score: np.ndarray | None, label: pa.Array | None, schema: pa.Schema) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "entity_key": keys,
            "score": pa.array(score, pa.float64()) if score is not None else pa.nulls(n, pa.float64()),
            "label": label if label is not None else pa.nulls(n, pa.string()),
        },
        schema=schema,
    )


def predict_part(
    *,
    part: str,
    run_dir: str,
    model: Any,
    manifest: ModelManifest,
    key: str,
    unseen_categories: Literal["reject", "score"],
    batch_rows: int,
    threads: int | None = None,
    rows: int | None = None,
) -> PartResult:
    """Validate and score every row of ``part``; write ``scores/`` and ``rejects/`` parts beside it.

    Output names follow the input part's name, so a retry overwrites its own output.
    ``threads`` caps the model's OpenMP/BLAS threads (parallel tasks x threads <= cores).
    ``rows`` (the part's size, known from the extract) gives the progress lines an ETA.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    name = part.rsplit("/", 1)[-1]
    scores_url = storage.join(run_dir, "scores", name)
    rejects_url = storage.join(run_dir, "rejects", name)
    rows_in = rows_scored = rows_rejected = 0
    out_schema = scores_schema(staging.read_schema(part).field(key).type)
    scores_out = staging.PartWriter(scores_url, out_schema)
    rejects_out = staging.PartWriter(rejects_url, REJECT_SCHEMA)
    model = scorer(model, manifest)
    limits = threadpool_limits(limits=threads) if threads else nullcontext()
    progress = Progress(log, f"predict {name}", rows)
    try:
        with limits:
            for batch in staging.iter_batches(part, batch_rows):
                table = pa.Table.from_batches([batch])
                checked = validate(table, key, manifest.features, unseen_categories)
                rows_in += table.num_rows
                rows_rejected += checked.rejects.num_rows
                rejects_out.write(checked.rejects)
                if checked.clean.num_rows:
                    frame = to_model_frame(checked.clean, manifest.features)
                    score, label = score_frame(model, manifest, frame)
                    keys = checked.clean.column(key).combine_chunks()
                    scores_out.write(_scores_table(keys, score, label, out_schema))
                    rows_scored += checked.clean.num_rows
                progress.add(table.num_rows)
    finally:
        scores_out.close()
        rejects_out.close()
    seconds = time.perf_counter() - started
    log.info(
        "predict %s: %d rows in, %d scored, %d rejected in %.1fs (%.0f rows/s)",
        name,
        rows_in,
        rows_scored,
        rows_rejected,
        seconds,
        rows_in / seconds if seconds else 0.0,
    )
    return PartResult(part, scores_url, rejects_url, rows_in, rows_scored, rows_rejected, seconds)
