"""A versioned model registry on a folder or an object store.

Layout under the registry root::

    <name>/versions/<n>/model.skops      the artifact (skops format: no pickle)
    <name>/versions/<n>/manifest.json    sha256, feature schema, task, training window, metrics
    <name>/aliases.json                  {"champion": 3, "challenger": 4}

A pipeline references a model by name plus an alias or a version number. Loading
verifies the artifact's sha256 against the manifest (and against a pin in the pipeline
config, when given) before deserialising, and skops only builds types from an
allowlist, so a tampered or hostile file fails instead of running code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from batchscore.errors import PermanentError
from batchscore.models import storage

ARTIFACT_NAME = "model.skops"
Task = Literal["classifier", "regressor", "clusterer"]


# Verified models kept by this process, least recently used first. A long-lived worker (Celery)
# scores many pipelines and model versions for weeks: the cache is bounded, so its memory is too.
# Keyed by the artifact's sha256: two registries or names holding the same bytes share one entry.
LOADED_MODELS_KEPT = int(os.environ.get("BATCHSCORE_LOADED_MODELS", "4"))
_LOADED: OrderedDict[str, Any] = OrderedDict()
_LOAD_LOCK = threading.Lock()  # threads of one process (the in-process runner) share one load


def _skops_io() -> Any:
    """``skops.io``, imported without the warning storm it causes inside an Airflow task.

    On import skops looks up the module of every SciPy ufunc by ``getattr`` on every
    loaded module; in a task process that touches Airflow's deprecated-attribute shims,
    about a thousand ``DeprecatedImportWarning``s that Airflow ships to the task log one by
    one (measured: 2.2 s of a slice task's start-up). Those warnings say nothing about
    our code, so only warnings raised from that lookup are ignored.
    """
    warnings.filterwarnings("ignore", module=r"skops\.io\._utils")
    import skops.io

    return skops.io


MODEL_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


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


class ModelRegistry:
    """Read and write model versions under ``root`` (a path or fsspec URL)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _url(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def versions(self, name: str) -> list[int]:
        fs, path = storage.filesystem(self._url(name, "versions"))
        if not fs.exists(path):
            return []
        return sorted(
            int(p.rstrip("/").rsplit("/", 1)[-1]) for p in fs.ls(path, detail=False) if p.rsplit("/", 1)[-1].isdigit()
        )

    def names(self) -> list[str]:
        """Every model name in the registry."""
        fs, path = storage.filesystem(self.root)
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if fs.isdir(p))

    def promote(
        self, name: str, alias: str, version: int, *, by: str = "", evidence: dict[str, Any] | None = None
    ) -> int | None:
        """Point ``alias`` at ``version`` and log the change (``alias_history.json``); returns the old target.

        ``by`` names who decided; ``evidence`` (small, JSON) is what they decided on, kept in the log.

        The alias file is replaced in one write (temp file, then rename, where the store allows),
        so a run resolving the alias sees the old version or the new one.
        """
        previous = self.aliases(name).get(alias)
        self.set_alias(name, alias, version)
        url = self._url(name, "alias_history.json")
        history = json.loads(storage.read_bytes(url)) if storage.exists(url) else []
        history.append(
            {
                "alias": alias,
                "from": previous,
                "to": version,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "by": by,
                **({"evidence": evidence} if evidence is not None else {}),
            }
        )
        storage.write_bytes(url, json.dumps(history, indent=2).encode())
        return previous

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        url = self._url(name, "alias_history.json")
        return list(json.loads(storage.read_bytes(url))) if storage.exists(url) else []

    def aliases(self, name: str) -> dict[str, int]:
        url = self._url(name, "aliases.json")
        if not storage.exists(url):
            return {}
        return {k: int(v) for k, v in json.loads(storage.read_bytes(url)).items()}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (e.g. promote a challenger to champion)."""
        if alias.isdigit() or alias == "latest":
            raise RegistryError(f"alias {alias!r} is reserved: use a name that is not a number or 'latest'")
        if not MODEL_ALIAS.match(alias):
            raise RegistryError(f"alias {alias!r} must be an identifier (letters, digits, _ and -, from a letter)")
        if version not in self.versions(name):
            raise RegistryError(f"model {name!r} has no version {version}")
        aliases = self.aliases(name) | {alias: version}
        storage.write_bytes(self._url(name, "aliases.json"), json.dumps(aliases, indent=2, sort_keys=True).encode())

    def register(
        self,
        name: str,
        estimator: Any,
        features: tuple[FeatureSpec, ...],
        *,
        training: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        positive_class: str | None = None,
        aliases: tuple[str, ...] = (),
        reference: dict[str, Any] | None = None,
        artifact: bytes | None = None,
    ) -> ModelManifest:
        """Serialise ``estimator`` with skops as the next version of ``name``; return its manifest.

        ``reference``: the drift reference (:func:`batchscore.scoring.drift.build_reference`), if any.
        ``artifact``: skops bytes of ``estimator`` to store as they are (an import from another
        registry keeps the source's bytes, so both name the model by the same sha256).
        """
        import sklearn

        sio = _skops_io()

        task = task_of(estimator)
        classes, positive_class = classes_of(estimator, task, positive_class)
        if artifact is None:
            artifact = sio.dumps(estimator)
        version = max(self.versions(name), default=0) + 1
        # Proven loadable under the allowlist now, so a run may trust these bytes by their sha256 alone.
        _deserialise(f"model {name} v{version}", artifact)
        manifest = ModelManifest(
            name=name,
            version=version,
            sha256=sha256_hex(artifact),
            task=task,
            features=features,
            classes=classes,
            positive_class=positive_class,
            training=training or {},
            metrics=metrics or {},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            sklearn_version=sklearn.__version__,
            reference=reference,
        )
        storage.write_bytes(self._url(name, "versions", str(version), ARTIFACT_NAME), artifact)
        storage.write_bytes(self._url(name, "versions", str(version), "manifest.json"), manifest.to_json().encode())
        for alias in aliases:
            self.set_alias(name, alias, version)
        return manifest

    def resolve(self, name: str, ref: str) -> ModelManifest:
        """The manifest for ``ref``: a version number, an alias, or ``latest``."""
        versions = self.versions(name)
        if not versions:
            raise RegistryError(f"no model named {name!r} in the registry at {self.root}")
        if ref.isdigit():
            version = int(ref)
            if version not in versions:
                raise RegistryError(f"model {name!r} has no version {version}; known versions: {versions}")
        elif ref == "latest":
            version = versions[-1]
        else:
            aliases = self.aliases(name)
            if ref not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise RegistryError(f"model {name!r} has no alias {ref!r}; known aliases: {known}")
            version = aliases[ref]
        text = storage.read_bytes(self._url(name, "versions", str(version), "manifest.json")).decode()
        return ModelManifest.from_json(text)

    def load(self, manifest: ModelManifest, pinned_sha256: str | None = None) -> Any:
        """Deserialise the artifact after checking its sha256; only allowlisted types are built.

        The artifact's bytes are read and checked against the manifest (and pin) on every
        call, so a changed, truncated or missing file fails even when this process has
        loaded that model before. Deserialising is what is cached: the last
        ``BATCHSCORE_LOADED_MODELS`` (4) models, keyed by their sha256, so a process that
        meets many model versions keeps a bounded number.
        """
        self._check_pin(manifest, pinned_sha256)
        data = self._verified_bytes(manifest)  # every load reads and checks the bytes (ms): a swapped file fails
        key = manifest.sha256
        with _LOAD_LOCK:
            if key in _LOADED:
                _LOADED.move_to_end(key)
                return _LOADED[key]
            model = _deserialise(f"model {manifest.name} v{manifest.version}", data)
            _LOADED[key] = model
            while len(_LOADED) > max(1, LOADED_MODELS_KEPT):
                _LOADED.popitem(last=False)
            return model

    def verify(self, manifest: ModelManifest, pinned_sha256: str | None = None) -> None:
        """Check the artifact's bytes against its manifest (and a pin) without deserialising it.

        Cheap (no scikit-learn import): what a run's planning step needs, since every
        artifact was proven loadable under the allowlist when it was registered, and the
        sha256 proves these are the same bytes. Loading checks everything again.
        """
        self._check_pin(manifest, pinned_sha256)
        self._verified_bytes(manifest)

    def _check_pin(self, manifest: ModelManifest, pinned_sha256: str | None) -> None:
        if pinned_sha256 is not None and manifest.sha256 != pinned_sha256:
            raise RegistryError(
                f"model {manifest.name} v{manifest.version}: sha256 {manifest.sha256} is not the one pinned "
                f"in the pipeline config ({pinned_sha256})"
            )

    def _verified_bytes(self, manifest: ModelManifest) -> bytes:
        url = self._url(manifest.name, "versions", str(manifest.version), manifest.artifact)
        try:
            data = storage.read_bytes(url)
        except FileNotFoundError:
            raise RegistryError(
                f"model {manifest.name} v{manifest.version}: its artifact {url} is missing (deleted or never copied)"
            ) from None
        actual = sha256_hex(data)
        if actual != manifest.sha256:
            raise RegistryError(
                f"model {manifest.name} v{manifest.version}: artifact sha256 {actual} does not match "
                f"its manifest ({manifest.sha256}); the file was changed or corrupted"
            )
        return data


def _deserialise(what: str, data: bytes) -> Any:
    """Build the estimator from skops bytes: only allowlisted types, then every tree bounds-checked.

    The one place bytes become a model (registration, MLflow imports, every slice's load).
    :mod:`batchscore.models.trusted_types` refuses any type outside its exact list before skops
    constructs anything, and :mod:`batchscore.models.tree_integrity` refuses trees whose indices point
    outside their arrays before anything predicts with them.
    """
    from batchscore.models.tree_integrity import CorruptTreeModel, check_trees
    from batchscore.models.trusted_types import UntrustedModelFile, trusted_names

    sio = _skops_io()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises several types for malformed archives
        raise RegistryError(f"{what}: not a readable skops file: {exc}") from exc
    try:
        model = sio.loads(data, trusted=trusted_names(what, data, untrusted))
        check_trees(what, model)
    except (UntrustedModelFile, CorruptTreeModel) as exc:
        raise RegistryError(str(exc)) from None
    return model
