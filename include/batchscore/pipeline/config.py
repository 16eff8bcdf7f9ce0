"""Pipeline configs: one YAML file per scoring job, validated before any DAG is built.

A config names the source query (bounded by the run's window), the entity key, the
feature columns, the model (name + alias or version), the output table, the schedule
and the reject threshold. Errors name the file and the field, so a broken config is
reported where it is, at DAG-parse time, instead of failing a run at 2 a.m.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchscore.errors import PermanentError
from batchscore.pipeline.notify import NotifyRule
from batchscore.pipeline.sla_config import SlaConfig

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PLACEHOLDERS = (":window_start", ":window_end")
SHADOW_SUFFIX = "_shadow"


class ConfigError(PermanentError, ValueError):
    """A pipeline config is invalid; the message names the file and the field."""

    remedy = "fix the named field of the pipeline file"


def _check_identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where the feature rows come from: an Airflow connection and a windowed query."""

    conn_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    query: str
    # Readiness: a SELECT over the window whose first value says the window's rows have landed;
    # the run waits (deferred, on the triggerer) before plan, polling, and fails after the timeout.
    ready_when: str | None = None
    poke_interval_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    ready_timeout_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 360

    @field_validator("ready_when")
    @classmethod
    def _ready_check(cls, check: str | None) -> str | None:
        if check is None:
            return None
        text = check.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", text) or ";" in text:
            raise ValueError("must be a single SELECT statement whose first value is true when the window has landed")
        names = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", text))
        if not names & {"window_start", "window_end"} or names - {"window_start", "window_end"}:
            raise ValueError(
                "must use :window_start and/or :window_end, and no other :parameters "
                f"(found {', '.join(sorted(names)) or 'none'})"
            )
        return text

    @field_validator("query")
    @classmethod
    def _bounded_by_window(cls, query: str) -> str:
        missing = [p for p in PLACEHOLDERS if not re.search(re.escape(p) + r"\b", query)]
        if missing:
            raise ValueError(
                f"must use both :window_start and :window_end (missing {', '.join(missing)}); "
                "bound the event column as  col >= :window_start AND col < :window_end"
            )
        if ";" in query.strip().rstrip(";"):
            raise ValueError("must be a single SELECT statement")
        return query.strip().rstrip(";")


# An MLflow registry reference: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
# Stages (``/Production``) and ``/latest`` are refused: an alias says the same, and is what moves.
MLFLOW_MODEL_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9._ -]{0,255})"
    r"(?:@(?P<alias>[A-Za-z0-9_-]{1,255})|/(?P<version>[1-9][0-9]{0,9}))$"
)


@dataclass(frozen=True)
class MlflowModelRef:
    """A registered MLflow model and one alias or version of it, as the pipeline names it."""

    name: str
    alias: str | None = None
    version: int | None = None

    @classmethod
    def parse(cls, uri: str) -> MlflowModelRef:
        match = MLFLOW_MODEL_URI.match(uri)
        if not match:
            raise ValueError(
                f"{uri!r} is not an MLflow model URI: use models:/<name>@<alias> or models:/<name>/<version>"
            )
        version = match["version"]
        return cls(match["name"], match["alias"], int(version) if version else None)

    def with_ref(self, ref: str | None) -> MlflowModelRef:
        """The same model at ``ref`` (a version number or an alias, from a trigger form), or unchanged."""
        if not ref:
            return self
        return MlflowModelRef(self.name, version=int(ref)) if ref.isdigit() else MlflowModelRef(self.name, alias=ref)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


class ModelConfig(_Strict):
    """Which model scores the rows: a registered name and an alias or version number, or an MLflow model.

    With ``mlflow`` (``models:/churn@champion``), ``plan`` resolves the MLflow alias once,
    imports that version into the registry as a version of ``name`` (by default the MLflow
    model's name) and the whole run scores it; the tracking server comes from the Airflow
    connection ``mlflow_conn_id``. ``sha256`` pins the MLflow artifact's bytes then, and is
    required for a pickle-based artifact (loading one runs code).
    """

    name: str = Field(pattern=MODEL_REF.pattern)
    version: str = Field(default="champion", pattern=MODEL_REF.pattern)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    mlflow: str | None = None
    mlflow_conn_id: str = Field(default="mlflow_default", pattern=r"^[A-Za-z0-9_.-]+$")

    @model_validator(mode="before")
    @classmethod
    def _name_from_mlflow(cls, data: object) -> object:
        """``name`` defaults to the MLflow model's name, when that is a valid registry name."""
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("mlflow"), str):
            match = MLFLOW_MODEL_URI.match(data["mlflow"])
            if not match:  # the mlflow field reports the bad URI; a second error about name would only confuse
                return {**data, "name": "unresolved"}
            if not MODEL_REF.match(match["name"]):
                raise ValueError(
                    f"name is required: the MLflow model name {match['name']!r} is not a registry name "
                    "(letters, digits, ., _ and -)"
                )
            return {**data, "name": match["name"]}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("mlflow")
    @classmethod
    def _mlflow_uri(cls, value: str | None) -> str | None:
        if value is not None:
            MlflowModelRef.parse(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.mlflow is not None and "version" in self.model_fields_set:
            raise ValueError(
                "version and mlflow are exclusive: with mlflow, put the alias or version in the URI "
                "(models:/<name>@<alias> or models:/<name>/<version>)"
            )
        if self.mlflow is None and "mlflow_conn_id" in self.model_fields_set:
            raise ValueError("mlflow_conn_id is only used with mlflow (a models:/ URI)")
        return self

    @property
    def mlflow_ref(self) -> MlflowModelRef | None:
        return MlflowModelRef.parse(self.mlflow) if self.mlflow else None

    @property
    def reference(self) -> str:
        """How the pipeline names its model, for humans: ``churn:champion`` or the MLflow URI."""
        return self.mlflow or f"{self.name}:{self.version}"


class ShadowConfig(_Strict):
    """A challenger scored on the same rows in the same run, published to ``<output table>_shadow``.

    ``name`` defaults to the pipeline's model; its features must be among the pipeline's and
    its task the champion's. Promotion is a person's decision: the approval of ``promote_<name>`` or ``models promote``.
    """

    name: str | None = Field(default=None, pattern=MODEL_REF.pattern)
    version: str = Field(pattern=MODEL_REF.pattern)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


HORIZON = re.compile(r"^(?P<n>[1-9][0-9]{0,4})(?P<unit>[hdw])$")
_HORIZON_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class OutcomesConfig(_Strict):
    """What happened to the scored entities, to judge the scores by (:mod:`batchscore.run.evaluation`).

    ``query`` returns ``(key, outcome)`` for the entities scored in a window, bound by
    ``:window_start``/``:window_end`` as the source query is; ``horizon`` (``30d``, ``12h``,
    ``2w``) is how long after a window ends its outcomes are complete: a window is evaluated
    only once it has passed. ``positive``: the outcome value that counts as the positive class
    (default: the model's positive class), compared as text.
    """

    conn_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")  # None: the source's connection
    query: str
    horizon: str
    positive: str | None = Field(default=None, max_length=200)

    @field_validator("query")
    @classmethod
    def _bounded_by_window(cls, query: str) -> str:
        return SourceConfig._bounded_by_window(query)

    @field_validator("horizon")
    @classmethod
    def _duration(cls, horizon: str) -> str:
        if not HORIZON.match(horizon):
            raise ValueError(f"{horizon!r} must be a whole number of hours, days or weeks: 12h, 30d, 2w")
        return horizon

    @field_validator("positive", mode="before")
    @classmethod
    def _positive_as_text(cls, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else str(value) if isinstance(value, int) else value

    @property
    def horizon_delta(self) -> timedelta:
        match = HORIZON.match(self.horizon)
        assert match is not None  # checked by the validator
        return int(match["n"]) * _HORIZON_UNITS[match["unit"]]


class PromotionRequirement(_Strict):
    """A bar the challenger should clear, stated in the approval request: a person still decides."""

    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "rmse", "mae", "r2"]
    min_gain: Annotated[float, Field(ge=0.0, le=1e9)] = 0.0
    windows: Annotated[int, Field(ge=1, le=366)] = 7


class PromotionConfig(_Strict):
    """How ``promote_<name>`` asks for the challenger's promotion (needs ``shadow`` and ``outcomes``).

    ``windows``: the last N evaluated windows the evidence covers; ``timeout_hours``: an unanswered
    request expires then, changing nothing; ``schedule``: a cron to ask on (None: by hand only).
    """

    windows: Annotated[int, Field(ge=1, le=366)] = 7
    timeout_hours: Annotated[float, Field(gt=0.0, le=24 * 30)] = 72.0
    schedule: str | None = None
    requires: PromotionRequirement | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        from croniter import croniter

        if schedule is not None and not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a valid cron expression")
        return schedule


class OutputConfig(_Strict):
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
            _check_identifier(part, "name part")
        return table

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".")[1]


class ValidationConfig(_Strict):
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


class DriftConfig(_Strict):
    """How a run's drift against the model's reference is judged (see :mod:`batchscore.scoring.drift`).

    ``warn`` records and logs it; ``hold`` publishes nothing when a column's PSI is above its
    threshold (the run fails naming them, the previous scores stay); ``off`` skips the counting.
    ``hold`` needs a model registered with a reference: without one, the run fails in plan.
    """

    policy: Literal["warn", "hold", "off"] = "warn"
    threshold: Annotated[float, Field(gt=0.0, le=100.0)] = 0.25  # per feature; 0.25 is the usual "large shift"
    score_threshold: Annotated[float, Field(gt=0.0, le=100.0)] = 0.25  # for the model's output
    min_rows: Annotated[int, Field(ge=0, le=1_000_000_000)] = 1000  # fewer scored rows: recorded, not judged


class ExecutionConfig(_Strict):
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


class PipelineConfig(_Strict):
    """One scoring job; it becomes the DAG ``score_<name>``."""

    name: str
    description: str = ""
    schedule: str = "0 0 * * *"
    timezone: str = "UTC"
    start_date: date
    catchup: bool = False
    owner: str = "data-platform"
    tags: tuple[str, ...] = ()
    source: SourceConfig
    entity_key: str
    features: tuple[str, ...] = Field(min_length=1)
    model: ModelConfig
    output: OutputConfig
    shadow: ShadowConfig | None = None
    validation: ValidationConfig = ValidationConfig()
    drift: DriftConfig = DriftConfig()
    execution: ExecutionConfig = ExecutionConfig()
    outcomes: OutcomesConfig | None = None
    promotion: PromotionConfig | None = None
    notify: tuple[NotifyRule, ...] = ()
    sla: SlaConfig | None = None  # when the scores are due (batchscore.pipeline.sla_config)

    @field_validator("name", "entity_key")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return _check_identifier(value, "name")

    @field_validator("features")
    @classmethod
    def _distinct_identifiers(cls, features: tuple[str, ...]) -> tuple[str, ...]:
        for feature in features:
            _check_identifier(feature, "feature")
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return features

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a valid cron expression")
        return schedule

    @field_validator("timezone")
    @classmethod
    def _tz(cls, tz: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        return tz

    @model_validator(mode="after")
    def _key_not_a_feature(self) -> PipelineConfig:
        if self.entity_key in self.features:
            raise ValueError(f"entity_key {self.entity_key!r} must not also be a feature")
        return self

    @model_validator(mode="after")
    def _shadow_table_fits(self) -> PipelineConfig:
        if self.shadow is not None and len(self.output.table_name) > 63 - len(SHADOW_SUFFIX):
            raise ValueError(
                f"output.table: {self.output.table_name!r} is too long to have a {SHADOW_SUFFIX} table beside it "
                f"(at most {63 - len(SHADOW_SUFFIX)} characters)"
            )
        return self

    @model_validator(mode="after")
    def _promotion_needs_evidence(self) -> PipelineConfig:
        if self.promotion is not None and (self.shadow is None or self.outcomes is None):
            raise ValueError("promotion needs both shadow (a challenger) and outcomes (to judge it by)")
        if self.promotion is not None and self.shadow is not None and self.shadow.name not in (None, self.model.name):
            raise ValueError(
                f"promotion moves {self.model.name}:{self.model.version}, so shadow must be a version of "
                f"{self.model.name} (shadow.name is {self.shadow.name!r}): register the challenger under that name"
            )
        if self.promotion is not None and self.model.version.isdigit():
            raise ValueError(
                "promotion moves the model's alias: model.version must be an alias (champion), not a number"
            )
        return self

    @property
    def dag_id(self) -> str:
        return f"score_{self.name}"

    @property
    def shadow_table(self) -> str:
        """Where a challenger's scores go: beside the output table, with its own lineage view."""
        return f"{self.output.table}{SHADOW_SUFFIX}"


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {where}: {message}")
    return "\n".join(lines)


def parse_config(data: object, path: Path) -> PipelineConfig:
    """Validate a parsed YAML document; ``path`` is only used in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    if config.name != path.stem:
        raise ConfigError(f"{path}: name: {config.name!r} must match the file name {path.stem!r}")
    return config


def load_config(path: Path) -> PipelineConfig:
    """Read and validate one pipeline file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(data, path)
