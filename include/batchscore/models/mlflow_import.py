"""MLflow as a model source: one registered MLflow model version, imported into the registry.

A pipeline naming ``models:/churn@champion`` gets its model here, in ``plan``: the alias is
resolved to a version once, that version's model file is downloaded and checked, and it is
imported into the registry as a version of the pipeline's model name (the MLflow name,
version, run id, source and the file's sha256 in its manifest). The run then scores that
registry version like any other (every slice loads it by version number and checks its
sha256), so an alias moved in MLflow after ``plan`` changes nothing in the run, and no task
after ``plan`` talks to MLflow. Importing is idempotent: a version already imported with
the same bytes is reused, and one whose MLflow file has changed since is refused.

Loading never runs code from the file: a skops file (MLflow 3's default for scikit-learn)
is read under the registry's allowlist, ignoring the trusted types the file's own MLmodel
lists (those come from the file's author); a pickle or cloudpickle file only when the
pipeline pins its sha256 and the downloaded bytes match, and it is then stored as skops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from batchscore.models.manifest import FeatureSpec, ModelManifest
from batchscore.models.mlflow_source import (
    MlflowArtifact,
    MlflowSourceError,
    MlflowVersion,
    client,
    download,
    redact_uri,
    resolve,
    run_metrics,
)
from batchscore.models.registry import ModelRegistry, _deserialise
from batchscore.pipeline.model_config import MlflowModelRef

log = logging.getLogger(__name__)

PICKLE_FORMATS = ("pickle", "cloudpickle")
# MLflow signature column types -> (feature kind, the Arrow type name the registry records).
SIGNATURE_TYPES = {
    "double": ("numeric", "double"),
    "float": ("numeric", "float"),
    "long": ("numeric", "int64"),
    "integer": ("numeric", "int32"),
    "boolean": ("numeric", "bool"),
    "string": ("categorical", "string"),
}


@dataclass(frozen=True)
class ImportedModel:
    """The registry version a run scores, and what the run record keeps of where it came from."""

    manifest: ModelManifest
    lineage: dict[str, Any]
    reused: bool


# Builds a drift reference for an imported estimator: (features, completed) -> (features, reference).
ReferenceOf = Callable[[Any, tuple[FeatureSpec, ...]], tuple[tuple[FeatureSpec, ...], dict[str, Any]]]


def check_pin(version: MlflowVersion, artifact: MlflowArtifact, pinned: str | None) -> None:
    if pinned is not None and artifact.sha256 != pinned.lower():
        raise MlflowSourceError(
            f"{version.label}: artifact {artifact.path} sha256 {artifact.sha256} is not the one pinned in "
            f"model.sha256 ({pinned}); the file changed or is not the one vouched for",
            remedy="find out why the MLflow file changed; pin the new sha256 only if you trust it",
        )


def read_estimator(version: MlflowVersion, artifact: MlflowArtifact, pinned: str | None) -> Any:
    """Build the estimator without running code from the file (see the module's docstring)."""
    check_pin(version, artifact, pinned)
    if artifact.format == "skops":
        return _deserialise(f"{version.label} ({artifact.path})", artifact.data)
    if artifact.format not in PICKLE_FORMATS:
        raise MlflowSourceError(f"{version.label}: unknown serialization format {artifact.format!r}")
    if pinned is None:
        raise MlflowSourceError(
            f"{version.label} is stored as {artifact.format}, which runs code when loaded; log it with "
            f"serialization_format='skops', or pin model.sha256: {artifact.sha256} if you trust where it comes from",
            remedy="re-log the model with serialization_format='skops', or pin the artifact's sha256 in model.sha256",
        )
    # The bytes match the pipeline's pin (checked above): a person vouched for exactly this file.
    if artifact.format == "cloudpickle":
        import cloudpickle

        return cloudpickle.loads(artifact.data)
    import pickle

    return pickle.loads(artifact.data)  # noqa: S301 (bytes verified against the pipeline's sha256 pin)


def features_from(
    version: MlflowVersion, estimator: Any, signature: tuple[dict[str, Any], ...]
) -> tuple[FeatureSpec, ...]:
    """The model's inputs: from the estimator (``feature_names_in_``), else from the MLflow signature.

    The signature's column types become the features' training types where it has them, so a
    source whose numbers turned into text fails in ``plan`` as it does for any registered model.
    """
    from batchscore.models.intake import features_of
    from batchscore.pipeline.config_rules import IDENTIFIER

    types = {str(c["name"]): str(c.get("type", "")) for c in signature}
    if getattr(estimator, "feature_names_in_", None) is not None:
        specs = features_of(estimator)
    elif types:
        bad = [f"{name} ({kind})" for name, kind in types.items() if kind not in SIGNATURE_TYPES]
        if bad:
            raise MlflowSourceError(f"{version.label}: signature inputs of unsupported types: {', '.join(bad)}")
        names = [name for name in types if not IDENTIFIER.match(name)]
        if names:
            raise MlflowSourceError(f"{version.label}: feature names must be lower-case SQL identifiers: {names}")
        specs = tuple(FeatureSpec(name, SIGNATURE_TYPES[kind][0]) for name, kind in types.items())  # type: ignore[arg-type]
    else:
        raise MlflowSourceError(
            f"{version.label} has no feature names: fit it on a pandas DataFrame, or log it with a signature "
            "(mlflow.sklearn.log_model(..., input_example=X))",
            remedy="re-log the model fitted on a DataFrame whose columns are the pipeline's features",
        )
    return tuple(
        replace(s, source_type=SIGNATURE_TYPES[types[s.name]][1])
        if s.source_type is None and types.get(s.name) in SIGNATURE_TYPES
        else s
        for s in specs
    )


def _origin(tracking_uri: str, version: MlflowVersion, artifact: MlflowArtifact) -> dict[str, Any]:
    """What identifies an imported model file: kept in its manifest, compared on every later import."""
    return {
        "tracking_uri": redact_uri(tracking_uri),
        "name": version.name,
        "version": version.version,
        "run_id": version.run_id,
        "source": version.source,
        "artifact_uri": version.artifact_uri,
        "artifact": artifact.path,
        "artifact_sha256": artifact.sha256,
        "format": artifact.format,
        "sklearn_version": artifact.sklearn_version,
    }


def _imports_of(registry: ModelRegistry, name: str, origin: dict[str, Any]) -> list[ModelManifest]:
    """Registry versions of ``name`` imported from the same MLflow server, model and version, newest first."""
    same = ("tracking_uri", "name", "version")
    found = []
    for number in reversed(registry.versions(name)):
        manifest = registry.resolve(name, str(number))
        recorded = mlflow_origin(manifest)
        if recorded is not None and all(recorded.get(k) == origin[k] for k in same):
            found.append(manifest)
    return found


def mlflow_origin(manifest: ModelManifest) -> dict[str, Any] | None:
    """The MLflow origin a registry version was imported from, if it was."""
    source = manifest.training.get("source")
    origin = source.get("mlflow") if isinstance(source, dict) else None
    return origin if isinstance(origin, dict) else None


def import_model(
    registry: ModelRegistry,
    name: str,
    tracking_uri: str,
    ref: MlflowModelRef,
    *,
    pinned: str | None = None,
    aliases: tuple[str, ...] = (),
    reference: ReferenceOf | None = None,
) -> ImportedModel:
    """Resolve ``ref`` in MLflow and make that version a registry version of ``name`` (or reuse its import).

    ``reference`` (``models register --mlflow ... --reference``) builds the drift reference from
    the estimator and its features: an import without one is then imported again with it, as a
    new version of the same bytes, which later plans of that MLflow version reuse (the newest).

    Every call downloads the file and checks its sha256: against ``pinned`` when given, and
    against the earlier import of the same MLflow version, so a file changed in MLflow's
    artifact store fails here instead of being scored. Callers that may race (two runs
    planning at once) serialise calls per ``name`` (:func:`import_for_run` does).
    """
    server = redact_uri(tracking_uri)
    mlflow = client(tracking_uri)
    version = resolve(mlflow, ref, server)
    artifact = download(version, tracking_uri)
    check_pin(version, artifact, pinned)
    origin = _origin(tracking_uri, version, artifact)
    earlier = _imports_of(registry, name, origin)
    same_bytes = [m for m in earlier if mlflow_origin(m)["artifact_sha256"] == artifact.sha256]  # type: ignore[index]
    if same_bytes and (reference is None or same_bytes[0].reference is not None):
        manifest, reused = same_bytes[0], True
        for alias in aliases:
            registry.set_alias(name, alias, manifest.version)
    else:
        if earlier and not same_bytes and pinned is None:
            recorded = mlflow_origin(earlier[0])["artifact_sha256"]  # type: ignore[index]
            raise MlflowSourceError(
                f"{version.label}: artifact {artifact.path} sha256 {artifact.sha256} does not match the one "
                f"imported as {name} v{earlier[0].version} ({recorded}); the file in MLflow was changed",
                remedy="register a new MLflow model version instead of changing a logged one; pin model.sha256 "
                "to the new checksum only if you trust the change",
            )
        estimator = read_estimator(version, artifact, pinned)
        features = features_from(version, estimator, artifact.signature)
        drift = None
        if reference is not None:
            features, drift = reference(estimator, features)
        manifest = registry.register(
            name,
            estimator,
            features,
            reference=drift,
            training={"source": {"mlflow": origin}},
            metrics=run_metrics(mlflow, version.run_id),
            aliases=aliases,
            artifact=artifact.data if artifact.format == "skops" else None,  # skops bytes kept as MLflow has them
        )
        reused = False
    log.info(
        "%s (%s) is %s v%d%s, artifact sha256 %s",
        version.label,
        ref.uri,
        name,
        manifest.version,
        " (imported before)" if reused else " (imported now)",
        artifact.sha256,
    )
    lineage = {
        "kind": "mlflow",
        "model_uri": ref.uri,
        "alias": version.alias,
        **origin,
        "registry_name": name,
        "registry_version": manifest.version,
        "registry_sha256": manifest.sha256,
    }
    return ImportedModel(manifest=manifest, lineage=lineage, reused=reused)


def import_for_run(
    name: str,
    ref: MlflowModelRef,
    *,
    tracking_uri: str,
    registry_root: str,
    scores_url: str,
    pinned: str | None,
) -> ImportedModel:
    """:func:`import_model` for ``plan``, under an advisory lock on the scores database per model name.

    Runs of the same pipeline may plan at once, on different workers; the lock (in the one
    database they all share) keeps two of them from importing the same version twice.
    """
    from batchscore import db

    with db.pg_connect(scores_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"batchscore:model-import:{name}",))
        return import_model(ModelRegistry(registry_root), name, tracking_uri, ref, pinned=pinned)
