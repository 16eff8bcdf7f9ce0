"""Pipeline configs: one YAML file per scoring job, validated before any DAG is built.

A config names the source query (bounded by the run's window), the entity key, the
feature columns, the model (name + alias or version), the output table, the schedule
and the reject threshold. Errors name the file and the field, so a broken config is
reported where it is, at DAG-parse time, instead of failing a run at 2 a.m.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from batchscore.pipeline.config_rules import MODEL_REF, ConfigError, Strict, check_identifier
from batchscore.pipeline.evaluation_config import OutcomesConfig, PromotionConfig
from batchscore.pipeline.model_config import ModelConfig, ShadowConfig
from batchscore.pipeline.notify import NotifyRule
from batchscore.pipeline.run_config import DriftConfig, ExecutionConfig, OutputConfig, ValidationConfig
from batchscore.pipeline.schedule_config import Schedule
from batchscore.pipeline.sla_config import SlaConfig
from batchscore.pipeline.source_config import SourceConfig

__all__ = ["MODEL_REF", "ConfigError", "PipelineConfig", "load_config", "parse_config"]

SHADOW_SUFFIX = "_shadow"


class PipelineConfig(Strict):
    """One scoring job; it becomes the DAG ``score_<name>``."""

    name: str
    description: str = ""
    schedule: Schedule = "0 0 * * *"  # a cron, or {asset: ..., partitioned: ..., period: ...}
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
        return check_identifier(value, "name")

    @field_validator("features")
    @classmethod
    def _distinct_identifiers(cls, features: tuple[str, ...]) -> tuple[str, ...]:
        for feature in features:
            check_identifier(feature, "feature")
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return features

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
