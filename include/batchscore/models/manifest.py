"""What a registered model version is: its manifest (sha256, inputs, task, training, metrics).

Plain data and standard library only, so the scoring and sink layers can name a model's
inputs without importing the registry's storage (fsspec) or scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from batchscore.errors import PermanentError
from batchscore.models import registry_layout as layout

ARTIFACT_NAME = layout.LEGACY_ARTIFACT  # the artifact inside a version's folder, in registries written before
Task = Literal["classifier", "regressor", "clusterer"]


class RegistryError(PermanentError, RuntimeError):
    """A model, version or alias is missing, or an artifact fails its checks."""

    remedy = "check the model name, version or alias (and the pinned sha256) against the registry"


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: ``kind`` numeric or categorical; categories seen in training.

    ``source_type`` is the column's Arrow type in the training data (``double``, ``string``...),
    when known: a run whose source changed it in a way that loses meaning (numbers now text)
    fails in ``plan`` naming both types.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    nullable: bool = True
    categories: tuple[str, ...] = ()
    source_type: str | None = None


@dataclass(frozen=True)
class ModelManifest:
    """Everything known about one registered model version."""

    name: str
    version: int
    sha256: str
    task: Task
    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...] = ()
    positive_class: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    sklearn_version: str = ""
    artifact: str = ARTIFACT_NAME
    # The drift reference (batchscore.scoring.drift.Reference.to_dict()): bins and fractions per feature and
    # for the model's output, from the training data. None: the model was registered without one.
    reference: dict[str, Any] | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        data = json.loads(text)
        data["features"] = tuple(
            FeatureSpec(**{**f, "categories": tuple(f.get("categories", ()))}) for f in data["features"]
        )
        data["classes"] = tuple(data.get("classes", ()))
        return cls(**data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def task_of(estimator: Any) -> Task:
    """Classify an estimator as classifier, regressor or clusterer (scikit-learn tags)."""
    from sklearn.base import is_classifier, is_clusterer, is_regressor

    if is_classifier(estimator):
        return "classifier"
    if is_regressor(estimator):
        return "regressor"
    if is_clusterer(estimator):
        return "clusterer"
    raise RegistryError(f"{type(estimator).__name__} is neither a classifier, a regressor nor a clusterer")


def classes_of(estimator: Any, task: Task, positive_class: str | None) -> tuple[tuple[str, ...], str | None]:
    """A classifier's classes and the one its score is the probability of (the second of two, unless named)."""
    if task != "classifier":
        return (), None
    classes = tuple(str(c) for c in getattr(estimator, "classes_", ()))
    positive_class = positive_class or (classes[-1] if len(classes) == 2 else None)
    if positive_class is not None and positive_class not in classes:
        raise RegistryError(f"positive class {positive_class!r} not in the model's classes {classes}")
    return classes, positive_class
