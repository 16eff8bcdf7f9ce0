"""Planning a scoring run: everything that can be wrong about it is checked before a row is written.

:func:`plan_run` resolves the model (checksum, features; a full load where this process
scores next), probes the source's schema, cuts the window into slices and records the run
as running. Its :class:`RunPlan` is all the slice tasks and the publish step are handed.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.scoring.features import staged_schema
from batchscore.scoring.predict import scorer
from batchscore.sink import run_record
from batchscore.sink.load import drop_run_slices
from batchscore.sink.output_table import ensure_output_table, pg_key_type
from batchscore.sink.ownership import claim_tables
from batchscore.sink.published_windows import check_no_overlap
from batchscore.source import slices
from batchscore.source.extract import estimate_rows, probe_schema, render_query
from batchscore.source.slices import KeySlice

log = logging.getLogger(__name__)


class PlanError(PermanentError, ValueError):
    """The run cannot start: its model does not fit the pipeline or the source."""

    remedy = "register a model trained on the pipeline's features, or change the pipeline's features or model"


@dataclass(frozen=True)
class Endpoints:
    """Resolved locations for one run: database URLs and the model registry."""

    source_url: str
    scores_url: str
    registry: str
    mlflow_uri: str | None = None  # the MLflow tracking server, for pipelines whose model comes from MLflow
    outcomes_url: str | None = None  # where outcomes.query runs when outcomes.conn_id is not the source's


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
    slices: tuple[dict[str, Any], ...] = (slices.WHOLE.to_dict(),)
    estimated_rows: int | None = None  # the planner's estimate: slice count and progress ETAs only
    shadow_name: str | None = None  # the challenger, resolved once (config.shadow)
    shadow_version: int | None = None
    shadow_sha256: str | None = None
    allow_shrink: bool = (
        False  # the operator lets this run publish below the volume guard (batchscore.sink.volume_guard)
    )

    @property
    def window(self) -> Window:
        return Window(datetime.fromisoformat(self.window_start), datetime.fromisoformat(self.window_end))

    @property
    def key_slices(self) -> tuple[KeySlice, ...]:
        return tuple(KeySlice.from_dict(s) for s in self.slices)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**{**data, "slices": tuple(data.get("slices", ()))})


def check_features_fit(config: PipelineConfig, manifest: ModelManifest) -> None:
    """The model's features (from its manifest) are exactly the pipeline's."""
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


def check_model_fits(config: PipelineConfig, manifest: ModelManifest, model: Any) -> None:
    """The model's features are exactly the pipeline's, and it can produce what its task needs."""
    check_features_fit(config, manifest)
    method = "predict_proba" if manifest.task == "classifier" else "predict"
    if not callable(getattr(model, method, None)):
        raise PlanError(f"model {manifest.name} v{manifest.version} is a {manifest.task} without {method}()")


def check_drift_reference(config: PipelineConfig, manifest: ModelManifest) -> None:
    """A drift gate needs the model's reference: ``hold`` without one fails here, ``warn`` says so."""
    if manifest.reference is not None or config.drift.policy == "off":
        return
    if config.drift.policy == "hold":
        raise PlanError(
            f"pipeline {config.name} holds on drift, but model {manifest.name} v{manifest.version} has no drift "
            "reference",
            remedy="register the model with --reference (its training data), or set drift.policy to warn or off",
        )
    log.warning("plan: model %s v%d has no drift reference; drift is not watched", manifest.name, manifest.version)


def resolve_challenger(config: PipelineConfig, registry: ModelRegistry, champion: ModelManifest) -> ModelManifest:
    """The pipeline's challenger (``shadow``): its bytes checked, its features among the pipeline's, same task."""
    assert config.shadow is not None
    challenger = registry.resolve(config.shadow.name or config.model.name, config.shadow.version)
    registry.verify(challenger, pinned_sha256=config.shadow.sha256)
    extra = sorted(set(challenger.feature_names) - set(config.features))
    if extra:
        raise PlanError(
            f"challenger {challenger.name} v{challenger.version} needs {', '.join(extra)}, which pipeline "
            f"{config.name} does not list"
        )
    if challenger.task != champion.task:
        raise PlanError(
            f"challenger {challenger.name} v{challenger.version} is a {challenger.task}; the champion "
            f"{champion.name} v{champion.version} is a {champion.task}: their scores cannot be compared"
        )
    return challenger


def load_model(
    config: PipelineConfig, registry: ModelRegistry, manifest: ModelManifest, pinned: str | None, warm: bool
) -> Any:
    model = registry.load(manifest, pinned_sha256=pinned)
    check_model_fits(config, manifest, model)
    if warm:  # this process scores next: build the (compiled) scorer now
        scorer(model, manifest)
    return model


def _check_model(
    config: PipelineConfig, registry: ModelRegistry, manifest: ModelManifest, preload: bool, pinned: str | None
) -> None:
    """Planning's model check: the full load when this process scores next, else the bytes and the manifest.

    A DAG's ``plan`` task does not score, so it skips importing scikit-learn and
    deserialising (seconds on the run's critical path): the artifact was proven loadable
    under the allowlist at registration and its sha256 proves these are the same bytes.
    Each slice task loads and checks it fully before writing anything.
    """
    if preload:
        load_model(config, registry, manifest, pinned, warm=True)
    else:
        registry.verify(manifest, pinned_sha256=pinned)
        check_features_fit(config, manifest)


def resolve_model(
    config: PipelineConfig, endpoints: Endpoints, model_ref: str | None
) -> tuple[ModelManifest, str | None, dict[str, Any] | None]:
    """The registry version this run scores, the sha256 pin to check it against, and where it came from.

    A registry model is resolved by alias or version. An MLflow model is resolved in MLflow
    and imported into the registry (:mod:`batchscore.models.mlflow_import`); the pipeline's pin was
    checked against the MLflow file there (a pickle's pin is not the stored skops file's), so
    the registry version is checked against its own manifest only.
    """
    ref = config.model.mlflow_ref
    if ref is None:
        manifest = ModelRegistry(endpoints.registry).resolve(config.model.name, model_ref or config.model.version)
        return manifest, config.model.sha256, None
    if not endpoints.mlflow_uri:
        raise PlanError(
            f"pipeline {config.name} takes its model from MLflow ({ref.uri}) but no tracking server was given",
            remedy=f"add the Airflow connection {config.model.mlflow_conn_id} (or set MLFLOW_TRACKING_URI)",
        )
    from batchscore.models.mlflow_import import import_for_run

    imported = import_for_run(
        config.model.name,
        ref.with_ref(model_ref),
        tracking_uri=endpoints.mlflow_uri,
        registry_root=endpoints.registry,
        scores_url=endpoints.scores_url,
        pinned=config.model.sha256,
    )
    return imported.manifest, None, imported.lineage


def plan_run(
    config: PipelineConfig,
    endpoints: Endpoints,
    *,
    window: Window,
    run_id: str,
    model_ref: str | None = None,
    dry_run: bool = False,
    max_slices: int | None = None,
    preload: bool = False,
    allow_shrink: bool = False,
) -> RunPlan:
    """Resolve and verify everything the run needs, cut the window into slices, record the run as running.

    The model is checked (see :func:`_check_model`; loaded too with ``preload``) on a thread
    while the source is probed, so a bad model or schema fails here, once, before anything
    is written. A window overlapping a published window of the pipeline's table without
    equal bounds is refused here too (:func:`~batchscore.sink.published_windows.check_no_overlap`).
    """
    started = time.perf_counter()
    registry = ModelRegistry(endpoints.registry)
    manifest, pinned, model_source = resolve_model(config, endpoints, model_ref)
    check_drift_reference(config, manifest)
    challenger = resolve_challenger(config, registry, manifest) if config.shadow is not None else None
    with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
        checking = pool.submit(_check_model, config, registry, manifest, preload, pinned)
        source_schema = probe_schema(endpoints.source_url, config.source.query, window)
        schema = staged_schema(source_schema, config.entity_key, manifest.features)
        unused = [c for c in source_schema.names if c not in schema.names]
        if unused:  # not an error (a query may carry columns for other uses), but never silently ignored
            log.warning("plan: the source query returns columns the model does not use: %s", ", ".join(unused))
        estimated = estimate_rows(endpoints.source_url, config.source.query, window)
        count = slices.slice_count(estimated, config.execution.slice_rows, max_slices or config.execution.max_slices)
        key_slices = slices.cut(
            endpoints.source_url,
            render_query(config.source.query, window),
            config.entity_key,
            count,
            estimated or 0,
        )
        checking.result()
    plan = RunPlan(
        pipeline=config.name,
        run_id=run_id,
        window_start=window.start.isoformat(),
        window_end=window.end.isoformat(),
        model_name=manifest.name,
        model_version=manifest.version,
        model_sha256=manifest.sha256,
        dry_run=dry_run,
        slices=tuple(s.to_dict() for s in key_slices),
        estimated_rows=estimated,
        shadow_name=challenger.name if challenger else None,
        shadow_version=challenger.version if challenger else None,
        shadow_sha256=challenger.sha256 if challenger else None,
        allow_shrink=allow_shrink,
    )
    with db.pg_connect(endpoints.scores_url, autocommit=True) as conn:
        run_record.apply_schema(conn)
        claim_tables(conn, config)  # before anything is made: a table another pipeline owns stops here
        key_type = pg_key_type(schema.field(config.entity_key).type)
        ensure_output_table(conn, config.output.table, config.entity_key, key_type)
        check_no_overlap(conn, config.name, config.output.table, window)
        if challenger is not None:
            ensure_output_table(conn, config.shadow_table, config.entity_key, key_type)
    # A run planned again (the whole run cleared) starts afresh: its earlier unpublished slices are stale.
    for table in (config.output.table, *([config.shadow_table] if challenger is not None else [])):
        drop_run_slices(endpoints.scores_url, pipeline=config.name, output_table=table, run_id=run_id)
    with db.pg_connect(endpoints.scores_url, autocommit=True) as conn:
        run_record.record_start(
            conn,
            pipeline=config.name,
            run_id=run_id,
            window=window,
            model_name=manifest.name,
            model_version=manifest.version,
            model_sha256=manifest.sha256,
            output_table=config.output.table,
            unused_columns=unused,
            model_source=model_source,
        )
        seconds = time.perf_counter() - started
        run_record.record_plan_seconds(conn, pipeline=config.name, run_id=run_id, seconds=seconds)
    log.info(
        "plan: %s window %s model %s v%d, ~%s rows in %d slice(s)%s, %.1fs",
        config.name,
        window,
        manifest.name,
        manifest.version,
        f"{estimated:,}" if estimated is not None else "?",
        len(key_slices),
        " (dry run)" if dry_run else "",
        seconds,
    )
    return plan
