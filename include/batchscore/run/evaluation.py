"""The evaluation stage: a window's published scores judged against its outcomes, once they are complete.

For each scored window whose horizon has passed, the outcomes query is run for that window,
each outcome is matched to the score of the same entity key in the same window (champion's
published scores, and the challenger's shadow scores when there are some), and the realised
metrics are recorded in ``scoring.performance`` (replacing the window's previous rows).
Scores without an outcome are counted, never guessed; outcomes with no score are counted too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.evaluation_config import OutcomesConfig
from batchscore.pipeline.windows import Window
from batchscore.run.planning import Endpoints
from batchscore.scoring.metrics import classifier_metrics, regressor_metrics
from batchscore.sink.performance import RolePerformance, published_scores, replace_performance
from batchscore.sink.run_record import apply_schema
from batchscore.source.extract import source_batches
from batchscore.source.slices import KeySlice

log = logging.getLogger(__name__)
NO_LABELS = "a clusterer's segments have no outcome to be compared with: recorded without metrics"


class EvaluationError(PermanentError, ValueError):
    """The outcomes cannot be matched to the scores as configured; nothing is recorded."""

    remedy = "fix the pipeline's outcomes (query, positive) so it returns one (key, outcome) row per entity"


@dataclass(frozen=True)
class Evaluation:
    """What evaluating one window did: ``evaluated``, or ``skipped`` with the reason (nothing written)."""

    pipeline: str
    window: Window
    status: str
    reason: str | None
    roles: tuple[RolePerformance, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "window_start": self.window.start.isoformat(),
            "window_end": self.window.end.isoformat(),
            "status": self.status,
            "reason": self.reason,
            "roles": [r.to_dict() for r in self.roles],
        }


def outcomes_due(outcomes: OutcomesConfig, window: Window) -> datetime:
    """When the window's outcomes are complete: its end plus the horizon."""
    return window.end + outcomes.horizon_delta


def read_outcomes(config: PipelineConfig, url: str, window: Window) -> pa.Table:
    """The window's outcomes as (key as text, outcome as text), NULL outcomes dropped; duplicate keys refused."""
    assert config.outcomes is not None
    schema, batches = source_batches(url, config.outcomes.query, window, "", KeySlice(0), 100_000)
    table = pa.Table.from_batches(list(batches), schema=schema)
    if table.num_columns < 2:
        raise EvaluationError(f"{config.name}: outcomes.query must return (key, outcome); got {table.column_names}")
    key, outcome = table.column(0), table.column(1)
    if pa.types.is_boolean(outcome.type):  # booleans as the words a positive: true names
        outcome = pc.if_else(outcome, "true", "false")
    frame = pa.table({"key": pc.cast(key, pa.string()), "outcome": pc.cast(outcome, pa.string())})
    frame = frame.filter(pc.and_(pc.is_valid(frame.column("key")), pc.is_valid(frame.column("outcome"))))
    distinct = pc.count_distinct(frame.column("key")).as_py()
    if distinct != frame.num_rows:
        raise EvaluationError(
            f"{config.name}: outcomes.query returned {frame.num_rows - distinct} duplicate keys for window {window}; "
            "it must return at most one outcome per entity key"
        )
    return frame


def _matched(scores: pa.Table, outcomes: pa.Table) -> pa.Table:
    """Scores with the outcome of the same key (NULL where there is none)."""
    return scores.join(outcomes, keys="key", join_type="left outer")


def judge(
    role: str, manifest: ModelManifest, scores: pa.Table, outcomes: pa.Table, *, positive: str | None, pipeline: str
) -> RolePerformance:
    """One model's performance on the window, from its published scores and the window's outcomes."""
    joined = _matched(scores, outcomes)
    matched = joined.filter(pc.is_valid(joined.column("outcome")))
    counts: dict[str, Any] = {
        "rows_scored": scores.num_rows,
        "rows_matched": matched.num_rows,
        "rows_without_outcome": scores.num_rows - matched.num_rows,
        "outcomes_unmatched": outcomes.num_rows - matched.num_rows,
    }
    base: dict[str, Any] = {
        "role": role,
        "model_name": manifest.name,
        "model_version": manifest.version,
        "task": manifest.task,
    }
    if manifest.task == "clusterer":
        return RolePerformance(**base, status="no_labels", reason=NO_LABELS, **counts)
    values = matched.column("outcome").to_numpy(zero_copy_only=False)
    curves: list[Any]
    if manifest.task == "classifier":
        positive = positive or manifest.positive_class
        known = set(manifest.classes) | ({positive} if positive else set())
        odd = sorted(set(values.tolist()) - known)
        if positive is None or odd:
            raise EvaluationError(
                f"{pipeline}: outcomes of values {odd[:5]} are not classes of {manifest.name} v{manifest.version} "
                f"({', '.join(manifest.classes)}); return one of them, or set outcomes.positive"
            )
        y = values == positive
        metrics, calibration = classifier_metrics(y, matched.column("score").to_numpy(zero_copy_only=False))
        curves = list(calibration)
    else:
        try:
            actual = values.astype(np.float64)
        except ValueError:
            raise EvaluationError(
                f"{pipeline}: outcomes.query must return numbers for a regressor (got {values[:3].tolist()})"
            ) from None
        metrics, deciles = regressor_metrics(actual, matched.column("score").to_numpy(zero_copy_only=False))
        curves = list(deciles)
    return RolePerformance(**base, status="evaluated", reason=None, metrics=metrics, curves=curves, **counts)


def _role_scores(config: PipelineConfig, endpoints: Endpoints, table: str, window: Window) -> tuple[pa.Table, Any]:
    scores, models = published_scores(endpoints.scores_url, table, config.entity_key, window)
    if len(models) > 1:
        raise EvaluationError(f"{config.name}: window {window} of {table} holds scores of several models: {models}")
    return scores, (models[0] if models else None)


def evaluate_window(
    config: PipelineConfig, endpoints: Endpoints, window: Window, *, run_id: str, now: datetime
) -> Evaluation:
    """Judge the window's published scores (champion, and challenger when shadowed) and record them.

    Idempotent: a re-evaluation replaces the window's rows. ``now`` is the clock the horizon is
    checked against (a window not past its horizon is skipped, nothing written).
    """
    outcomes_config = config.outcomes
    if outcomes_config is None:
        raise EvaluationError(f"{config.name}: has no outcomes: add outcomes (query, horizon) to its pipeline file")
    due = outcomes_due(outcomes_config, window)
    if now < due:
        reason = (
            f"outcomes of window {window} are complete at {due.isoformat()} (horizon {outcomes_config.horizon} "
            f"after its end), not yet at {now.isoformat(timespec='seconds')}: nothing evaluated"
        )
        return Evaluation(config.name, window, "skipped", reason)
    tables = [("champion", config.output.table)] + ([("challenger", config.shadow_table)] if config.shadow else [])
    scored = [(role, *_role_scores(config, endpoints, table, window)) for role, table in tables]
    if all(model is None for _, _, model in scored):
        return Evaluation(config.name, window, "skipped", f"window {window} has no published scores to evaluate")
    url = endpoints.source_url
    if outcomes_config.conn_id is not None and outcomes_config.conn_id != config.source.conn_id:
        url = endpoints.outcomes_url or url
    outcomes = read_outcomes(config, url, window)
    registry = ModelRegistry(endpoints.registry)
    judged = tuple(
        judge(
            role,
            registry.resolve(model[0], str(model[1])),
            scores,
            outcomes,
            positive=outcomes_config.positive,
            pipeline=config.name,
        )
        for role, scores, model in scored
        if model is not None
    )
    with db.pg_connect(endpoints.scores_url, autocommit=True) as conn:
        apply_schema(conn)
        replace_performance(conn, pipeline=config.name, window=window, run_id=run_id, rows=judged)
    for row in judged:
        log.info("%s %s v%d on %s: %s", config.name, row.role, row.model_version, window, row.metrics or row.reason)
    return Evaluation(config.name, window, "evaluated", None, judged)
