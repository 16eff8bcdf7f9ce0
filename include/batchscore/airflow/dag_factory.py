"""Build one Airflow DAG per pipeline config: plan -> score_slice (mapped over the window's slices) -> publish.

Parse-time cost is a YAML read and pydantic validation: pandas, pyarrow and
scikit-learn are imported only inside the tasks.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from batchscore import settings
from batchscore.airflow.dag_inputs import first_day, pipeline_config
from batchscore.airflow.deadlines import deadline_for
from batchscore.airflow.schedules import announce_scores, dag_schedule, scores_alias, scores_asset
from batchscore.models import registry_layout
from batchscore.pipeline.config import MODEL_REF, PipelineConfig

__all__ = ["build_dag", "dag_for_pipeline", "scores_asset", "trigger_params"]

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")  # as registry.MODEL_ALIAS

# ISO 8601 date or date-time (what the form's date-time picker and the REST API send), or empty.
# Airflow checks `pattern` when a run is triggered, unlike `format: date-time` (which only picks
# the form's widget); the window's other rules (both ends or neither, start before end, length,
# not in the future) need both fields and the clock: the UI plugin checks them when the run is
# triggered (batchscore.airflow.glue.check_trigger_conf), and `plan` checks them again.
ISO_DATE_TIME = r"^$|^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"


def model_suggestions(root: str, name: str, limit: int = 20) -> list[str]:
    """Aliases, then version numbers newest first, of model ``name`` in a registry on a local folder.

    For the trigger form's suggestions at DAG-parse time: it reads one folder's listings and its
    small alias files, never an object store or the network, and never raises (an unreadable or
    remote registry gives no suggestions, not a broken DAG). The registry module itself is not
    imported: it brings fsspec, which parsing does not need;
    :mod:`batchscore.models.registry_layout` is plain standard library.
    """
    if "://" in root and not root.startswith("file://"):
        return []
    folder = Path(root.removeprefix("file://")) / name
    try:
        aliases = registry_layout.local_aliases(folder)
        versions = sorted(registry_layout.local_versions(folder), reverse=True)
        refs = [alias for alias in sorted(aliases) if isinstance(alias, str) and _ALIAS.match(alias)]
    except (OSError, ValueError, TypeError, KeyError):  # unreadable, not JSON, or not a mapping of aliases
        return []
    return (refs + [str(v) for v in versions])[:limit]


def trigger_params(config: PipelineConfig) -> dict[str, Param]:
    """The trigger form: all optional; empty fields mean 'the run's own window and the configured model'.

    The model field suggests the registry's aliases and versions when the registry is a local
    folder (read at parse time, cheap); any other value matching the pattern is still accepted.
    """
    model = f"{config.model.name}:{config.model.version}"
    refs = model_suggestions(settings.model_registry_root(), config.model.name)
    # Param's extra keywords are its JSON schema: `examples` makes the form's field a free-text box with a list.
    suggestions: dict[str, Any] = {"examples": refs} if refs else {}
    return {
        "window_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            pattern=ISO_DATE_TIME,
            maxLength=40,
            title="Window start (inclusive)",
            description="Score this window instead of the run's own interval. Give both ends or neither; "
            f"a time without an offset is read in {config.timezone}. Example: 2026-11-01T00:00:00Z. "
            "Ignored by backfill runs: each scores its own interval.",
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            pattern=ISO_DATE_TIME,
            maxLength=40,
            title="Window end (exclusive)",
            description="End of the window, after its start and not in the future; at most "
            f"{config.execution.max_window_days} days after the start.",
        ),
        "model_version": Param(
            None,
            type=["null", "string"],
            pattern=MODEL_REF.pattern,
            maxLength=64,
            title=f"Model {config.model.name}: version or alias",
            description=f"A version number (e.g. 3) or an alias (e.g. challenger) of model {config.model.name}. "
            f"Empty: the configured {model}.",
            **suggestions,
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Extract, validate and score, record the run, but publish nothing.",
        ),
        "allow_shrink": Param(
            False,
            type="boolean",
            title="Allow shrink",
            description="Publish even when the volume guard would hold the run: fewer rows than "
            f"{config.validation.min_replace_fraction:.0%} of what the window holds now, fewer than "
            f"{config.validation.min_rows_fraction:.0%} of the recent windows' median, or fewer than "
            f"{config.validation.min_rows:,} (an empty window). Off: such a run publishes nothing and fails.",
        ),
    }


def build_dag(config: PipelineConfig) -> DAG:
    """The scoring DAG ``score_<name>`` for one pipeline config."""

    def on_failure(context: Any) -> None:
        from batchscore.airflow.glue import mark_failed

        mark_failed(config, context)

    @dag(
        dag_id=config.dag_id,
        description=config.description or f"Batch scoring for {config.name}",
        schedule=dag_schedule(config),
        start_date=first_day(config),
        catchup=config.catchup,
        max_active_runs=config.execution.max_active_runs,
        params=trigger_params(config),
        tags=["batch-scoring", *config.tags],
        deadline=deadline_for(config),
        default_args={
            "owner": config.owner,
            "retries": config.execution.retries,
            "retry_delay": timedelta(seconds=config.execution.retry_delay_seconds),
            "on_failure_callback": on_failure,
        },
        doc_md=f"Scores `{config.source.conn_id}` rows with model `{config.model.reference}` "
        f"into `{config.output.table}` ({config.output.conn_id}). Each run replaces its window's scores.",
    )
    def scoring() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            """Resolve the window, the model and the source schema; cut the window into slices. Writes no scores.

            Returns one small assignment per slice (the run's plan and the slice's key range),
            which the mapped ``score_slice`` expands over.
            """
            from batchscore.airflow import glue
            from batchscore.run.planning import plan_run

            context = get_current_context()
            with glue.failing_fast():
                _, _, model_ref, dry_run = glue.run_params(dict(context["params"]))
                window = glue.window_from_context(config, context)
                planned = plan_run(
                    config,
                    glue.endpoints(config, with_mlflow=True),
                    window=window,
                    run_id=context["run_id"],
                    model_ref=model_ref,
                    dry_run=dry_run,
                    allow_shrink=glue.allow_shrink(dict(context["params"])),
                )
            return [{"run": planned.to_dict(), "slice": key_slice} for key_slice in planned.slices]

        # multiple_outputs=False: TaskFlow infers True from a dict return annotation and then pushes every
        # key as an XCom of its own, one API call each (23 calls, 0.4 s of a slice task); publish reads only
        # the return value.
        @task(
            map_index_template="slice {{ task.op_kwargs['assignment']['slice']['index'] }}",
            max_active_tis_per_dagrun=config.execution.parallel_slices,
            multiple_outputs=False,
        )
        def score_slice(assignment: dict[str, Any]) -> dict[str, Any]:
            """Read, score and load one slice of the window (one mapped task per slice, in parallel)."""
            from batchscore.airflow import glue
            from batchscore.run.planning import RunPlan
            from batchscore.run.stages import score_slice
            from batchscore.source.slices import KeySlice

            planned = RunPlan.from_dict(assignment["run"])
            with glue.failing_fast():
                return score_slice(
                    config,
                    glue.endpoints(config),
                    planned,
                    KeySlice.from_dict(assignment["slice"]),
                    workers=glue.slice_workers(config, len(planned.slices)),
                ).to_dict()

        @task(outlets=[scores_alias(config)], multiple_outputs=False)
        def publish(assignments: list[dict[str, Any]], scored: list[dict[str, Any]]) -> dict[str, Any]:
            """Make the slices the window's scores in one transaction, finish the run record, tell downstream.

            The scores Asset's event is emitted only when the window was published (not for a dry run).
            """
            from batchscore.airflow import glue
            from batchscore.run.planning import RunPlan
            from batchscore.run.publish_stage import publish_run
            from batchscore.sink.publish import SliceResult

            with glue.failing_fast():
                result = publish_run(
                    config,
                    glue.endpoints(config),
                    RunPlan.from_dict(assignments[0]["run"]),
                    [SliceResult.from_dict(s) for s in scored],
                )
            announce_scores(config, get_current_context(), RunPlan.from_dict(assignments[0]["run"]), result)
            return {
                "rows_written": result.rows_written,
                "rows_rejected": result.rows_rejected,
                "published": result.published,
                "score_summary": result.score_summary,
            }

        assignments = plan()
        if config.source.ready_when is not None:
            from batchscore.airflow.readiness import WaitForUpstream

            WaitForUpstream(task_id="wait_for_upstream", config=config, retries=0) >> assignments
        scored = score_slice.expand(assignment=assignments)
        publish(assignments, scored)  # type: ignore[arg-type]  # TaskFlow passes XComArgs

    return scoring()


def dag_for_pipeline(name: str) -> DAG:
    """The DAG of the pipeline file ``<name>.yaml`` (what each generated DAG file calls at parse time).

    Only this pipeline's file is read. An error in it raises a :class:`ConfigError` naming
    the file and its fields, which Airflow shows as this DAG file's import error: only this
    DAG stops. (Clashes between files are reported by the DAG folder's check file.)
    """
    return build_dag(pipeline_config(name))
