"""The publish stage: a run's slices become the window's scores, from any mix of fresh and earlier slices.

What the DAG's ``publish`` task and the in-process run call. Everything about the swap itself
(locks, the guard, the overlap rule) is :func:`batchscore.sink.publish.publish_window`'s; this
stage adds what needs the run's plan: slices whose tables are gone are scored again first, the
drift gate comes from the model, and old unpublished slice tables are swept after.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from batchscore.models.manifest import ModelManifest
from batchscore.pipeline.config import PipelineConfig
from batchscore.run.planning import Endpoints, RunPlan
from batchscore.run.stages import manifest_of, score_slice
from batchscore.scoring.drift import Reference
from batchscore.sink import run_record
from batchscore.sink.load import slices_gone
from batchscore.sink.publish import DriftGate, PublishResult, SliceResult, publish_window
from batchscore.sink.shadow_table import ShadowPublish
from batchscore.sink.sweep import sweep_unpublished
from batchscore.sink.volume_guard import VolumeGuard

log = logging.getLogger(__name__)


def drift_gate(config: PipelineConfig, manifest: ModelManifest) -> DriftGate | None:
    """How publish judges the slices' drift counts: the model's reference and the pipeline's policy."""
    if config.drift.policy == "off" or manifest.reference is None:
        return None
    return DriftGate(
        reference=Reference.from_dict(manifest.reference),
        policy=config.drift.policy,
        threshold=config.drift.threshold,
        score_threshold=config.drift.score_threshold,
        min_rows=config.drift.min_rows,
    )


def publish_run(
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    results: list[SliceResult],
    *,
    workers: int | None = None,
) -> PublishResult:
    """Publish the run's slices as the window's scores (one short transaction).

    Works from any mix of slices scored again and slices of earlier tries (a cleared task):
    slices already attached to the window stay, and a slice whose tables are gone (the run
    failed and dropped them, or the sweep did) is scored again here first, with the plan's
    model and key range, so clearing any task converges to the window exact.
    """
    planned = {s.index for s in plan.key_slices}
    got = {r.index for r in results}
    if got != planned:
        raise RuntimeError(f"publish needs every slice of the plan: missing {sorted(planned - got)}")
    gone = slices_gone(endpoints.scores_url, results)
    if gone:
        log.warning("publish: the tables of slice(s) %s are gone; scoring them again here", gone)
        again = {
            s.index: score_slice(config, endpoints, plan, s, workers=workers)
            for s in plan.key_slices
            if s.index in gone
        }
        results = [again.get(r.index, r) for r in results]
        run_record.record_event_now(
            endpoints.scores_url,
            pipeline=config.name,
            run_id=plan.run_id,
            stage="publish",
            event="slices scored again",
            detail=f"slice(s) {', '.join(map(str, gone))}: their tables were gone (dropped when the run failed, "
            "or swept); scored again by publish with the plan's model and key ranges",
        )
    result = publish_window(
        endpoints.scores_url,
        pipeline=config.name,
        output_table=config.output.table,
        window=plan.window,
        run_id=plan.run_id,
        slices=results,
        max_reject_fraction=config.validation.max_reject_fraction,
        dry_run=plan.dry_run,
        lock_timeout_seconds=config.execution.publish_wait_seconds,
        drift=drift_gate(config, manifest_of(config, endpoints, plan)),
        shadow=ShadowPublish(config.shadow_table, plan.shadow_name, plan.shadow_version or 0, plan.shadow_sha256 or "")
        if plan.shadow_name
        else None,
        volume=VolumeGuard.of(config.validation, allow_shrink=plan.allow_shrink),
    )
    try:  # best effort: a sweep that fails leaves tables for the next one, never fails the run
        sweep_unpublished(
            endpoints.scores_url,
            pipeline=config.name,
            older_than=timedelta(hours=config.execution.sweep_after_hours),
            by=f"the publish of run {plan.run_id}",
        )
    except Exception:
        log.exception("publish: the sweep of old unpublished slice tables failed; the next publish tries again")
    return result
