"""A versioned model registry on a folder or an object store.

Layout under the registry root (:mod:`batchscore.models.registry_layout` has it all)::

    <name>/artifacts/<sha256>.skops      the artifact (skops format: no pickle), written once
    <name>/versions/<n>/manifest.json    sha256, feature schema, task, training window, metrics
    <name>/alias_changes/<seq>.json      one alias change each (champion -> 3 ...)

Writers never share a version and a version appears complete or not at all: the artifact is
written first under its own sha256, then the manifest is created exclusively (only if absent),
and that creation is the version; a writer that loses the race for number n tries n+1.
Alias changes are compare-and-swap (:mod:`batchscore.models.alias_log`).

A pipeline references a model by name plus an alias or a version number. Loading
verifies the artifact's sha256 against the manifest (and against a pin in the pipeline
config, when given) before deserialising, and skops only builds types from an
allowlist, so a tampered or hostile file fails instead of running code.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from batchscore.models import registry_layout as layout
from batchscore.models import storage
from batchscore.models.alias_log import ANY, AliasLog, Unset
from batchscore.models.manifest import (
    FeatureSpec,
    ModelManifest,
    RegistryError,
    classes_of,
    sha256_hex,
    task_of,
)
from batchscore.models.registry_lock import writer_lock

CLAIM_ATTEMPTS = 200  # each failed attempt means another writer took that version number


# Verified models kept by this process, least recently used first. A long-lived worker (Celery)
# scores many pipelines and model versions for weeks: the cache is bounded, so its memory is too.
# Keyed by the artifact's sha256: two registries or names holding the same bytes share one entry.
LOADED_MODELS_KEPT = int(os.environ.get("BATCHSCORE_LOADED_MODELS", "4"))
_LOADED: OrderedDict[str, Any] = OrderedDict()
_LOAD_LOCK = threading.Lock()  # threads of one process (the in-process runner) share one load


def skops_io() -> Any:
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


class ModelRegistry:
    """Read and write model versions under ``root`` (a path or fsspec URL)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _url(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, oldest first: those with a manifest (a dead writer's folder is not one)."""
        found = storage.glob(self._url(name, layout.VERSIONS), f"*/{layout.MANIFEST}")
        numbers = (layout.version_number(p.rstrip("/").rsplit("/", 2)[-2]) for p in found)
        return sorted(n for n in numbers if n is not None)

    def _next_number(self, name: str) -> int:
        """One past every numbered folder, complete or not: a half-written version's number is never reused."""
        numbers = (layout.version_number(n) for n in storage.names_in(self._url(name, layout.VERSIONS)))
        return max((n for n in numbers if n is not None), default=0) + 1

    def names(self) -> list[str]:
        """Every model name in the registry."""
        fs, path = storage.filesystem(self.root)
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if fs.isdir(p))

    def _aliases_of(self, name: str, *, locked: bool = False) -> AliasLog:
        return AliasLog(self._url(name), locked=locked)

    def promote(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        by: str = "",
        expected: int | Unset | None = ANY,
        evidence: dict[str, Any] | None = None,
    ) -> int | None:
        """Point ``alias`` at ``version`` as one logged change; return the version it pointed at before.

        ``by`` names who decided; ``evidence`` (small, JSON) is what they decided on, kept in the change.

        Compare-and-swap: two promotions at once both land, one after the other, each in the
        history with the target it replaced. ``expected`` (a version, or None for "unset"):
        refuse with :class:`~batchscore.models.alias_log.AliasConflict` if the alias points elsewhere.
        """
        if alias.isdigit() or alias == "latest":
            raise RegistryError(f"alias {alias!r} is reserved: use a name that is not a number or 'latest'")
        if not MODEL_ALIAS.match(alias):
            raise RegistryError(f"alias {alias!r} must be an identifier (letters, digits, _ and -, from a letter)")
        if version not in self.versions(name):
            raise RegistryError(f"model {name!r} has no version {version}")
        with writer_lock(self.root, name) as locked:
            return self._aliases_of(name, locked=locked).change(
                alias, version, by=by, expected=expected, evidence=evidence
            )

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every alias change of ``name``, oldest first (``alias``, ``from``, ``to``, ``at``, ``by``)."""
        return self._aliases_of(name).history()

    def aliases(self, name: str) -> dict[str, int]:
        return self._aliases_of(name).current()

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (e.g. promote a challenger to champion); logged like :meth:`promote`."""
        self.promote(name, alias, version)

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

        Safe from many processes and machines at once: each call gets a version of its own,
        which appears complete or not at all (the module's docstring says how).
        ``reference``: the drift reference (:func:`batchscore.scoring.drift.build_reference`), if any.
        ``artifact``: skops bytes of ``estimator`` to store as they are (an import from another
        registry keeps the source's bytes, so both name the model by the same sha256).
        """
        import sklearn

        sio = skops_io()

        task = task_of(estimator)
        classes, positive_class = classes_of(estimator, task, positive_class)
        if artifact is None:
            artifact = sio.dumps(estimator)
        # Proven loadable under the allowlist now, so a run may trust these bytes by their sha256 alone.
        _deserialise(f"model {name} v{self._next_number(name)}", artifact)
        sha256 = sha256_hex(artifact)
        draft = ModelManifest(
            name=name,
            version=0,
            sha256=sha256,
            task=task,
            features=features,
            classes=classes,
            positive_class=positive_class,
            training=training or {},
            metrics=metrics or {},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            sklearn_version=sklearn.__version__,
            artifact=layout.artifact_path(sha256),
            reference=reference,
        )
        with writer_lock(self.root, name) as locked:
            self._store_artifact(name, sha256, artifact, locked=locked)
            manifest = self._claim_version(draft, locked=locked)
            self._artifact_still_there(name, sha256, artifact, locked=locked)
        for alias in aliases:
            self.set_alias(name, alias, manifest.version)
        return manifest

    def _store_artifact(self, name: str, sha256: str, data: bytes, *, locked: bool) -> None:
        """Write the artifact under its sha256, once: an artifact already there must be these bytes."""
        url = self._url(name, layout.artifact_path(sha256))
        try:
            storage.create_exclusive(url, data, locked=locked)
        except FileExistsError:  # the same model registered before (or by a writer that died before its manifest)
            if sha256_hex(storage.read_bytes(url)) != sha256:
                raise RegistryError(
                    f"model {name}: {url} exists with other bytes than its name says (changed or corrupted)",
                    remedy="delete that file (no complete version can be using it), then register again",
                ) from None
            storage.refresh(url, data)  # now in use again: a sweep of old orphans leaves it be

    def _artifact_still_there(self, name: str, sha256: str, data: bytes, *, locked: bool) -> None:
        """After the manifest: an artifact a racing orphan sweep removed is written again (same bytes)."""
        url = self._url(name, layout.artifact_path(sha256))
        if not storage.exists(url):
            with contextlib.suppress(FileExistsError):
                storage.create_exclusive(url, data, locked=locked)

    def _claim_version(self, draft: ModelManifest, *, locked: bool) -> ModelManifest:
        """Create the next version's manifest exclusively; on losing number n to another writer, try n+1.

        Creating the manifest is the whole commit: before it the version does not exist, after
        it the version and its (already written) artifact are complete.
        """
        for attempt in range(CLAIM_ATTEMPTS):
            version = self._next_number(draft.name)
            manifest = replace(draft, version=version)
            url = self._url(draft.name, layout.VERSIONS, str(version), layout.MANIFEST)
            try:
                storage.create_exclusive(url, manifest.to_json().encode(), locked=locked)
            except FileExistsError:
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))  # noqa: S311 (jitter, not secrets)
                continue
            return manifest
        raise RuntimeError(f"model {draft.name}: no version number claimed after {CLAIM_ATTEMPTS} attempts")

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
        url = self._url(name, layout.VERSIONS, str(version), layout.MANIFEST)
        try:
            return ModelManifest.from_json(storage.read_bytes(url).decode())
        except FileNotFoundError:
            raise RegistryError(f"model {name!r} v{version}: its manifest {url} is missing (deleted)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"model {name!r} v{version}: manifest {url} is not readable: {exc}") from None

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

    def _artifact_url(self, manifest: ModelManifest) -> str:
        """Where the manifest's artifact is: under the model's folder by sha256, or (older) in the version's."""
        if layout.is_artifact_path(manifest.artifact):
            return self._url(manifest.name, manifest.artifact)
        if manifest.artifact == layout.LEGACY_ARTIFACT:
            return self._url(manifest.name, layout.VERSIONS, str(manifest.version), manifest.artifact)
        raise RegistryError(
            f"model {manifest.name} v{manifest.version}: manifest names artifact {manifest.artifact!r}, "
            f"expected {layout.artifact_path('<sha256>')!r}"
        )

    def _verified_bytes(self, manifest: ModelManifest) -> bytes:
        url = self._artifact_url(manifest)
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

    sio = skops_io()
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
