"""A scoring run's middle stage: one slice read, scored and loaded into its own table.

A run is plan (:mod:`batchscore.run.planning`), score a slice (here), publish
(:mod:`batchscore.run.publish_stage`). The Airflow tasks and the command line call exactly
these: the DAG maps :func:`score_slice` over the plan's slices on the executor's slots, and
:func:`batchscore.run.in_process.run_pipeline` calls the three one after the other. Everything
that can be wrong about a run (window, model reference, checksum, feature schema, source
columns) is checked in :func:`plan_run`, before a single row is written.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial

import pyarrow as pa

from batchscore import settings
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.run.planning import Endpoints, PlanError, RunPlan, load_model
from batchscore.run.progress import Progress
from batchscore.run.runner import Overlapped
from batchscore.run.slice_duplicates import settle_duplicates
from batchscore.scoring.drift import DriftCounter, Reference
from batchscore.scoring.features import conform, staged_schema
from batchscore.scoring.predict import ScoredBatch, score_batch, scorer, scores_schema
from batchscore.scoring.summary import ScoreSummary
from batchscore.sink.load import (
    RejectWriter,
    ingest_scores,
    prepare_slice,
    read_scores,
)
from batchscore.sink.publish import SliceResult
from batchscore.sink.run_cost import SliceCpu, charge_process_cpu, process_age, timed, uncharged_process_cpu
from batchscore.sink.scored_keys import ScoredKeys
from batchscore.sink.shadow_table import Challenger, ShadowLoader
from batchscore.source.extract import source_batches
from batchscore.source.slices import KeySlice

log = logging.getLogger(__name__)


# Imported before a slice begins only when the process started warm: forked from a preloading
# forkserver (batchscore.airflow.warm_start), or after an earlier slice in the same process.
WARM_MODULE = "skops.io"


def manifest_of(config: PipelineConfig, endpoints: Endpoints, plan: RunPlan) -> ModelManifest:
    """The plan's model manifest, refused if the version's bytes changed since the run was planned."""
    manifest = ModelRegistry(endpoints.registry).resolve(config.model.name, str(plan.model_version))
    if manifest.sha256 != plan.model_sha256:
        raise PlanError(
            f"model {manifest.name} v{manifest.version} changed since the run was planned "
            f"(sha256 {manifest.sha256} != {plan.model_sha256})"
        )
    return manifest


MIN_BATCH_ROWS = 10_000


def drift_counter(config: PipelineConfig, manifest: ModelManifest) -> DriftCounter | None:
    """The slice's drift counts, when the pipeline watches drift and the model has a reference."""
    if config.drift.policy == "off" or manifest.reference is None:
        return None
    return DriftCounter(Reference.from_dict(manifest.reference))


def batch_rows(config: PipelineConfig, slice_rows: int | None, workers: int) -> int:
    """Rows per scored batch: ``batch_rows``, smaller for small slices so every scoring thread has work.

    A batch costs nothing to start, so a slice is cut into about four batches per thread
    at least: the last batches are then short and the threads finish together.
    """
    rows = config.execution.batch_rows
    if slice_rows:
        rows = min(rows, max(MIN_BATCH_ROWS, -(-slice_rows // (4 * workers))))
    return rows


def default_workers(threads_per_slice: int | None = None) -> tuple[int, int]:
    """(scoring threads, model threads each) for a slice task on this machine."""
    workers = max(1, threads_per_slice or os.cpu_count() or 1)
    return workers, max(1, (os.cpu_count() or 1) // workers)


def _challenger(  # noqa: PLR0917 (one caller, score_slice)
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    champion: ModelManifest,
    key_slice: KeySlice,
    schema: pa.Schema,
) -> Challenger:
    """The planned challenger, loaded (sha256 checked against the plan), with its slice table and loader started."""
    assert plan.shadow_name is not None
    registry = ModelRegistry(endpoints.registry)
    manifest = registry.resolve(plan.shadow_name, str(plan.shadow_version))
    model = scorer(registry.load(manifest, pinned_sha256=plan.shadow_sha256), manifest)
    target = prepare_slice(
        endpoints.scores_url,
        pipeline=config.name,
        output_table=config.shadow_table,
        window=plan.window,
        run_id=plan.run_id,
        manifest=manifest,
        key_slice=key_slice,
    )
    loader = ShadowLoader(endpoints.scores_url, target, schema)
    return Challenger(model, manifest, loader, champion, config.entity_key, config.validation.unseen_categories, schema)


def score_slice(
    config: PipelineConfig,
    endpoints: Endpoints,
    plan: RunPlan,
    key_slice: KeySlice,
    *,
    workers: int | None = None,
) -> SliceResult:
    """Read, validate, score and load one slice of the window into a table of its own.

    The source query starts first, so the server works while this process loads the model.
    ``workers`` scoring threads share one model (model threads each = cores // workers),
    with reading and loading on threads of their own. A retry replaces exactly this slice.
    """
    started = time.perf_counter()
    startup = process_age()
    cpu_at_start = time.process_time()
    warm = WARM_MODULE in sys.modules
    workers, threads = default_workers(workers)
    manifest = manifest_of(config, endpoints, plan)
    registry = ModelRegistry(endpoints.registry)
    slice_estimate = -(-plan.estimated_rows // len(plan.slices)) if plan.estimated_rows else None
    helpers = ThreadPoolExecutor(2, thread_name_prefix="model")
    # The model loads (and its compiled scorer is built) while the source query starts and the
    # first batches are read: a batch waits for the model in its scoring thread, not the reader.
    loading = helpers.submit(timed, load_model, config, registry, manifest, plan.model_sha256, True)
    preparing = helpers.submit(
        prepare_slice,
        endpoints.scores_url,
        pipeline=config.name,
        output_table=config.output.table,
        window=plan.window,
        run_id=plan.run_id,
        manifest=manifest,
        key_slice=key_slice,
    )
    helpers.shutdown(wait=False)
    source_schema, batches = source_batches(
        endpoints.source_url,
        config.source.query,
        plan.window,
        config.entity_key,
        key_slice,
        batch_rows(config, slice_estimate, workers),
    )
    try:
        schema = staged_schema(source_schema, config.entity_key, manifest.features)
        target = preparing.result()
    except BaseException:
        batches.close()  # type: ignore[attr-defined]  # a generator: closes the source connection
        raise
    out_schema = scores_schema(config.entity_key, schema.field(config.entity_key).type)
    challenger = _challenger(config, endpoints, plan, manifest, key_slice, out_schema) if plan.shadow_name else None
    score_seconds = [0.0]
    score_cpu = [0.0]
    drift_seconds = [0.0]  # CPU seconds counting the rows into the drift reference's bins
    lock = threading.Lock()

    drift = drift_counter(config, manifest)

    def work(batch: pa.RecordBatch) -> tuple[ScoredBatch, pa.Table | None]:
        model = scorer(loading.result()[0], manifest)  # the first batches wait here for the model
        began, cpu = time.perf_counter(), time.thread_time()
        scored = score_batch(
            conform(batch, schema), model, manifest, config.entity_key, config.validation.unseen_categories, out_schema
        )
        theirs = None
        if challenger is not None and scored.clean is not None:
            theirs = challenger.score(scored.clean, scored.scores)
        counting = time.thread_time()  # CPU time: what drift costs, even on a busy machine
        if drift is not None and scored.clean is not None:
            drift.add(scored.clean, scored.scores)
        counted = time.thread_time() - counting
        with lock:
            score_seconds[0] += time.perf_counter() - began
            score_cpu[0] += time.thread_time() - cpu
            drift_seconds[0] += counted
        return replace(scored, clean=None), theirs  # the rows wait for the loader: only their scores are needed

    def limit_threads() -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # per thread: OpenMP's thread count belongs to the calling thread

    stream = Overlapped(source=batches, work=work, workers=workers, initializer=limit_threads)
    summary = ScoreSummary()
    progress = Progress(log, key_slice.describe(), slice_estimate, estimated=True)
    counts = {"in": 0, "scored": 0, "rejected": 0}
    rejects = RejectWriter(endpoints.scores_url, target)
    keys = ScoredKeys()  # one row per key, proved in a byte per key of the slice's range (sink/scored_keys.py)

    def scored_batches():  # type: ignore[no-untyped-def]
        for result, theirs in stream:
            if challenger is not None and theirs is not None:  # in the source's order, as the champion's
                challenger.loader.write(theirs)
            rejects.write(result.rejects)
            summary.add(result.scores)
            keys.add(result.scores.column(config.entity_key))
            counts["in"] += result.rows_in
            counts["scored"] += result.scores.num_rows
            counts["rejected"] += result.rejects.num_rows
            progress.add(result.rows_in)
            yield from result.scores.to_batches()
        loading.result()  # a model that failed to load fails the slice before its load commits, rows or none

    load_cpu = time.thread_time()
    shadow = None
    try:
        ingest_scores(endpoints.scores_url, target, out_schema, scored_batches())
        shadow = challenger.finish() if challenger is not None else None
    finally:
        rejects.close()
        if challenger is not None and shadow is None:
            challenger.loader.abort()
    checking = time.perf_counter()
    duplicates = 0
    if keys.has_duplicates():
        duplicates, shadow = settle_duplicates(
            endpoints.scores_url,
            config,
            manifest,
            target,
            keys.duplicates(),
            schema,
            drift,
            challenger,
            shadow,
            partial(
                source_batches, endpoints.source_url, config.source.query, plan.window, config.entity_key, key_slice
            ),
        )
    unique_key_seconds = time.perf_counter() - checking
    if duplicates:  # the summary counted those rows: summarise what the slice now holds
        counts["scored"] -= duplicates
        counts["rejected"] += duplicates
        summary = ScoreSummary()
        for batch in read_scores(endpoints.scores_url, target):
            summary.add(batch)
    seconds = time.perf_counter() - started
    cpu = SliceCpu(
        startup=uncharged_process_cpu(cpu_at_start),
        model=loading.result()[1],
        read=stream.read.cpu_seconds,
        score=score_cpu[0],
        load=time.thread_time() - load_cpu,
        total=time.process_time() - cpu_at_start,
    )
    charge_process_cpu()
    first_row = startup + ((stream.read.first_at or time.perf_counter()) - started)
    log.info(
        "%s: %d rows in, %d scored, %d rejected in %.1fs (%.0f rows/s); process start-up %.1fs (%s), "
        "first row at %.1fs after process start (model ready at %.1fs); read %.1fs, "
        "scoring %.1f thread-s on %d thread(s) (drift %.2f), key check %.1fs; CPU %s",
        key_slice.describe(),
        counts["in"],
        counts["scored"],
        counts["rejected"],
        seconds,
        counts["in"] / seconds if seconds else 0.0,
        startup,
        "warm" if warm else "cold",
        first_row,
        startup + loading.result()[2] - started,
        stream.read.seconds,
        score_seconds[0],
        workers,
        drift_seconds[0],
        unique_key_seconds,
        cpu.describe(),
    )
    return SliceResult(
        index=key_slice.index,
        lineage_id=target.lineage_id,
        schema=target.schema,
        table=target.table,
        rejects_table=target.rejects_table,
        lower=key_slice.lower,
        upper=key_slice.upper,
        rows_in=counts["in"],
        rows_scored=counts["scored"],
        rows_rejected=counts["rejected"],
        seconds=round(seconds, 3),
        read_seconds=round(stream.read.seconds, 3),
        score_seconds=round(score_seconds[0], 3),
        startup_seconds=round(startup, 3),
        first_row_seconds=round(first_row, 3),
        unique_key_seconds=round(unique_key_seconds, 3),
        host=settings.host_name(),
        summary=summary.partial(),
        drift=drift.partial() if drift is not None else None,
        drift_seconds=round(drift_seconds[0], 3),
        shadow=shadow.to_dict() if shadow is not None else None,
        cpu=cpu.to_dict(),
        warm_start=warm,
    )
