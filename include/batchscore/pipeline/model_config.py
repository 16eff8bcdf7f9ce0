"""The ``model:`` and ``shadow:`` blocks: which registered (or MLflow) model scores, and its challenger."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from batchscore.pipeline.config_rules import MODEL_REF, Strict

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


class ModelConfig(Strict):
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


class ShadowConfig(Strict):
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
