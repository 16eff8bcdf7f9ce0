"""A scoring run's stages as plain functions: plan, extract, predict (per part), load.

The Airflow tasks and the command line call exactly these. Everything that can be
wrong about a run (window, model reference, checksum, feature schema, source columns)
is checked in :func:`plan_run`, before a single row is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from batchscore import runs, storage
from batchscore.config import PipelineConfig
from batchscore.extract import ExtractResult, estimate_rows, extract_window, probe_schema
from batchscore.features import staged_schema
from batchscore.load import PublishResult, publish_window
from batchscore.predict import PartResult, predict_part, scorer
from batchscore.registry import ModelManifest, ModelRegistry
from batchscore.windows import Window

log = logging.getLogger(__name__)


class PlanError(ValueError):
    """The run cannot start: its model does not fit the pipeline or the source."""


@dataclass(frozen=True)
class Endpoints:
    """Resolved locations for one run: database URLs, model registry, staging root."""

    source_url: str
    scores_url: str
    registry: str
    staging: str


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, fixed before it starts; serialisable for XCom."""

    pipeline: str
    run_id: str
    window_start: str
    window_end: str
    model_name: str
    model_version: int
    model_sha256: str
    dry_run: bool
    run_dir: str
    estimated_rows: int | None = None  # the planner's estimate, for progress ETAs only

    @property
    def window(self) -> Window:
        return Window(datetime.fromisoformat(self.window_start), datetime.fromisoformat(self.window_end))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**data)


def run_slug(run_id: str) -> str:
    """A path-safe, collision-free folder name for an Airflow run id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:80]
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def _manifest(config: PipelineConfig, endpoints: Endpoints, plan: RunPlan) -> ModelManifest:
    manifest = ModelRegistry(endpoints.registry).resolve(config.model.name, str(plan.model_version))
    if manifest.sha256 != plan.model_sha256:
        raise PlanError(
            f"model {manifest.name} v{manifest.version} changed since the run was planned "
            f"(sha256 {manifest.sha256} != {plan.model_sha256})"
        )
    return manifest


def check_model_fits(config: PipelineConfig, manifest: ModelManifest, model: Any) -> None:
    """The model's features are exactly the pipeline's, and it can produce what its task needs."""
    expected, actual = set(config.features), set(manifest.feature_names)
    if expected != actual:
        parts = []
        if actual - expected:
            parts.append(f"the model needs {', '.join(sorted(actual - expected))} which the pipeline does not list")
        if expected - actual:
            parts.append(f"the pipeline lists {', '.join(sorted(expected - actual))} which the model does not use")
        raise PlanError(
            f"model {manifest.name} v{manifest.version} does not fit pipeline {config.name}: {'; '.join(parts)}"
        )
    method = "predict_proba" if manifest.task == "classifier" else "predict"
    if not callable(getattr(model, method, None)):
        raise PlanError(f"model {manifest.name} v{manifest.version} is a {manifest.task} without {method}()")


def plan_run(
    config: PipelineConfig,
    endpoints: Endpoints,
    *,
    window: Window,
    run_id: str,
    model_ref: str | None = None,
    dry_run: bool = False,
) -> RunPlan:
    """Resolve and verify everything the run needs, then record it as running."""
    registry = ModelRegistry(endpoints.registry)
    manifest = registry.resolve(config.model.name, model_ref or config.model.version)
    model = registry.load(manifest, pinned_sha256=config.model.sha256)
    check_model_fits(config, manifest, model)
    staged_schema(probe_schema(endpoints.source_url, config.source.query, window), config.entity_key, manifest.features)
    plan = RunPlan(
        pipeline=config.name,
        run_id=run_id,
        window_start=window.start.isoformat(),
        window_end=window.end.isoformat(),
        model_name=manifest.name,
        model_version=manifest.version,
        model_sha256=manifest.sha256,
        dry_run=dry_run,
        run_dir=storage.join(endpoints.staging, config.name, window.slug, run_slug(run_id)),
        estimated_rows=estimate_rows(endpoints.source_url, config.source.query, window),
    )
    runs.apply_schema(endpoints.scores_url)
    runs.record_start(
        endpoints.scores_url,
        pipeline=config.name,
        run_id=run_id,
        window=window,
        model_name=manifest.name,
        model_version=manifest.version,
        model_sha256=manifest.sha256,
        output_table=config.output.table,
    )
    log.info(
        "plan: %s window %s model %s v%d%s",
        config.name,
        window,
        manifest.name,
        manifest.version,
        " (dry run)" if dry_run else "",
    )
    return plan


def run_extract(
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    *,
    part_rows: int | None = None,
    on_part: Callable[[str], None] | None = None,
) -> ExtractResult:
    manifest = _manifest(config, endpoints, plan)
    return extract_window(
        source_url=endpoints.source_url,
        query=config.source.query,
        window=plan.window,
        key=config.entity_key,
        features=manifest.features,
        run_dir=plan.run_dir,
        part_rows=part_rows or config.execution.part_rows,
        batch_rows=config.execution.batch_rows,
        on_part=on_part,
        expected_rows=plan.estimated_rows,
    )


def run_predict(
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    part: str,
    *,
    threads: int | None = None,
    rows: int | None = None,
) -> PartResult:
    """Score one part; the model is loaded (and verified) once per process, then reused."""
    manifest = _manifest(config, endpoints, plan)
    model = ModelRegistry(endpoints.registry).load(manifest, pinned_sha256=plan.model_sha256)
    return predict_part(
        part=part,
        run_dir=plan.run_dir,
        model=model,
        manifest=manifest,
        key=config.entity_key,
        unseen_categories=config.validation.unseen_categories,
        batch_rows=config.execution.batch_rows,
        threads=threads,
        rows=rows,
    )


def _warm_scorer(config: PipelineConfig, endpoints: Endpoints, model_ref: str | None) -> None:
    """Beside the plan (mostly waits on the databases): load the model and build its scorer.

    Building a compiled scorer imports numba and compiles (or loads) the tree walk, about a
    second; the parts then find it ready. Only a head start: any error here is the plan's
    to report, so it is left for the plan to find.
    """
    try:
        registry = ModelRegistry(endpoints.registry)
        manifest = registry.resolve(config.model.name, model_ref or config.model.version)
        scorer(registry.load(manifest), manifest)
    except Exception:
        log.debug("scorer warm-up skipped", exc_info=True)


def run_load(
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    parts: Iterable[PartResult],
    extract_seconds: float | Callable[[], float],
) -> PublishResult:
    """Publish the window, then remove the run's staging folder (kept on failure for the retry)."""
    result = publish_window(
        url=endpoints.scores_url,
        pipeline=config.name,
        output_table=config.output.table,
        key=config.entity_key,
        window=plan.window,
        run_id=plan.run_id,
        manifest=_manifest(config, endpoints, plan),
        parts=parts,
        extract_seconds=extract_seconds,
        max_reject_fraction=config.validation.max_reject_fraction,
        dry_run=plan.dry_run,
        expected_rows=plan.estimated_rows,
    )
    storage.remove_tree(plan.run_dir)
    return result


MIN_IN_PROCESS_PART_ROWS = 10_000


def in_process_part_rows(config: PipelineConfig, estimated_rows: int | None, workers: int) -> int:
    """Part size for the in-process runner: small, so scoring starts early and no worker idles at the end.

    In one process a part costs nothing to start (unlike a mapped task), so parts are at most
    two batches, and small enough that the window makes about four parts per worker: the
    last parts are then short and the workers finish together.
    """
    rows = min(config.execution.part_rows, 2 * config.execution.batch_rows)
    if estimated_rows:
        rows = min(rows, max(MIN_IN_PROCESS_PART_ROWS, -(-estimated_rows // (4 * workers))))
    return rows


def run_pipeline(
    config: PipelineConfig,
    endpoints: Endpoints,
    *,
    window: Window,
    run_id: str,
    model_ref: str | None = None,
    dry_run: bool = False,
    parallel: int | None = None,
) -> PublishResult:
    """All stages in this process (the command line's and the benchmark's path), overlapped.

    The same stage functions as the DAG's tasks, but pipelined: the extract runs on its own
    thread, each part is scored as soon as the extract closes it, on ``parallel`` worker
    threads (default: one per core) sharing one loaded model (model threads per worker =
    cores // workers), and the bulk load streams each part's scores as it is ready.
    """
    threading.Thread(target=_warm_scorer, args=(config, endpoints, model_ref), name="warm-up", daemon=True).start()
    plan = plan_run(config, endpoints, window=window, run_id=run_id, model_ref=model_ref, dry_run=dry_run)
    try:
        workers = max(1, parallel or os.cpu_count() or 1)
        threads = max(1, (os.cpu_count() or 1) // workers)
        # OpenMP's thread count is per calling thread: each worker sets its own (in predict_part).
        with ThreadPoolExecutor(workers, thread_name_prefix="predict") as pool:
            scored: queue.Queue[Future[PartResult] | None] = queue.Queue()
            extracted: list[ExtractResult] = []
            failed: list[BaseException] = []

            def extract() -> None:
                try:
                    extracted.append(
                        run_extract(
                            config,
                            endpoints,
                            plan,
                            part_rows=in_process_part_rows(config, plan.estimated_rows, workers),
                            on_part=lambda part: scored.put(
                                pool.submit(run_predict, config, endpoints, plan, part, threads=threads)
                            ),
                        )
                    )
                except BaseException as exc:
                    failed.append(exc)
                finally:
                    scored.put(None)

            def parts_in_order() -> Iterator[PartResult]:
                while (future := scored.get()) is not None:
                    yield future.result()
                extractor.join()
                if failed:
                    raise failed[0]

            extractor = threading.Thread(target=extract, name="extract", daemon=True)
            extractor.start()
            # The bulk load consumes parts as they are scored, so it overlaps extract and predict.
            return run_load(config, endpoints, plan, parts_in_order(), lambda: extracted[0].seconds)
    except Exception as exc:
        runs.record_failure(
            endpoints.scores_url, pipeline=config.name, run_id=run_id, error=f"{type(exc).__name__}: {exc}"
        )
        raise
