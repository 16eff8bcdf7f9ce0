"""The output, validation, drift and execution blocks: where a run writes, what it checks, how it is cut."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from batchscore.pipeline.config_rules import Strict, check_identifier


class OutputConfig(Strict):
    """Where scores go: an Airflow connection and a ``schema.table`` name."""

    conn_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    table: str

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        parts = table.split(".")
        if len(parts) != 2:
            raise ValueError(f"{table!r} must be schema.table")
        for part in parts:
            check_identifier(part, "name part")
        return table

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".")[1]


class ValidationConfig(Strict):
    """How bad rows are handled: rejected with a reason, the run failing past a threshold."""

    max_reject_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    unseen_categories: Literal["reject", "score"] = "reject"
    # A key seen more than once in a window: every copy rejected (counted against the threshold),
    # the first copy (in the source's order) kept and the others rejected, or the run failed.
    duplicate_keys: Literal["reject", "keep_first", "fail"] = "reject"
    # The volume guard (batchscore.sink.volume_guard), judged at publish on the rows about to be published:
    # at least min_rows; a window that holds scores is replaced only by min_replace_fraction of its rows;
    # a new window needs min_rows_fraction of the median of the last history_windows published windows
    # (per hour of window, so a shorter manual window is judged by its length). allow_shrink overrides once.
    min_rows: Annotated[int, Field(ge=0, le=10_000_000_000)] = 1
    min_replace_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    min_rows_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    history_windows: Annotated[int, Field(ge=1, le=1000)] = 7


class DriftConfig(Strict):
    """How a run's drift against the model's reference is judged (see :mod:`batchscore.scoring.drift`).

    ``warn`` records and logs it; ``hold`` publishes nothing when a column's PSI is above its
    threshold (the run fails naming them, the previous scores stay); ``off`` skips the counting.
    ``hold`` needs a model registered with a reference: without one, the run fails in plan.
    """

    policy: Literal["warn", "hold", "off"] = "warn"
    threshold: Annotated[float, Field(gt=0.0, le=100.0)] = 0.25  # per feature; 0.25 is the usual "large shift"
    score_threshold: Annotated[float, Field(gt=0.0, le=100.0)] = 0.25  # for the model's output
    min_rows: Annotated[int, Field(ge=0, le=1_000_000_000)] = 1000  # fewer scored rows: recorded, not judged


class ExecutionConfig(Strict):
    """How a run is cut into slices, spread over the executor's slots, and retried.

    A window of more than ``slice_rows`` rows (the planner's estimate) is cut into slices of
    about that size, at most ``max_slices``; each is scored by its own task. At most
    ``parallel_slices`` of a run's slice tasks run at once, each with ``threads_per_slice``
    scoring threads: keep ``parallel_slices x threads_per_slice`` at or below the cores the
    executor gives the run (docs/performance.md, "How the work is cut").
    """

    slice_rows: Annotated[int, Field(ge=100, le=1_000_000_000)] = 2_000_000
    max_slices: Annotated[int, Field(ge=1, le=1024)] = 8
    parallel_slices: Annotated[int, Field(ge=1, le=1024)] | None = None
    threads_per_slice: Annotated[int, Field(ge=1, le=256)] | None = None
    batch_rows: Annotated[int, Field(ge=1, le=5_000_000)] = 100_000
    max_active_runs: Annotated[int, Field(ge=1, le=64)] = 3
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_delay_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    max_window_days: Annotated[int, Field(ge=1, le=366)] = 31
    # How long publish waits for the window's locks (other runs of the window, readers holding it),
    # asking for them a second at a time so no reader queues behind it; then the task fails (and retries).
    publish_wait_seconds: Annotated[int, Field(ge=1, le=86_400)] = 600
    # Unpublished slice tables older than this whose run is not running are dropped by the next publish.
    sweep_after_hours: Annotated[float, Field(gt=0, le=8_760)] = 24.0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict):
            for old, new in (("part_rows", "slice_rows"), ("parallel_parts", "parallel_slices")):
                if old in data:
                    raise ValueError(f"{old} was renamed {new} (windows are now cut into slices, not staged parts)")
        return data
