"""Reading a model from an MLflow registry: resolve an alias or version, download its scikit-learn file.

Only ``plan`` (and ``batchscore models register --mlflow``) talks to MLflow, through the
``mlflow-skinny`` client; :mod:`batchscore.models.mlflow_import` turns what is downloaded here into a
registry version. MLflow's refusals (no such model, alias or version; a file missing from the
artifact store; credentials refused) become one-line permanent errors; anything else (the server
or its artifact store unreachable) propagates, so Airflow retries the task.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from batchscore.models.manifest import RegistryError, sha256_hex
from batchscore.pipeline.model_config import MlflowModelRef

# A model file's path inside the model's artifacts, as MLmodel names it: no absolute path, no "..".
ARTIFACT_PATH = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_REFUSED = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})


class MlflowSourceError(RegistryError):
    """The MLflow model cannot be used: missing, not scikit-learn, unsafe to load, or changed."""

    remedy = "check the pipeline's model.mlflow URI (model name, alias or version) against the MLflow registry"


@dataclass(frozen=True)
class MlflowVersion:
    """One version of a registered MLflow model, as resolved (``alias``: what it was reached by)."""

    name: str
    version: int
    run_id: str
    source: str
    artifact_uri: str
    alias: str | None

    @property
    def label(self) -> str:
        return f"MLflow model {self.name!r} v{self.version}"


@dataclass(frozen=True)
class MlflowArtifact:
    """The model file of one MLflow version as downloaded; these bytes are what is checked and loaded."""

    path: str
    data: bytes
    format: str
    sklearn_version: str
    signature: tuple[dict[str, Any], ...]

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


def redact_uri(uri: str) -> str:
    """A tracking URI without user or password, fit for logs, manifests and run records."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def client(tracking_uri: str) -> Any:
    """An MLflow client for ``tracking_uri`` (credentials: MLflow's own MLFLOW_TRACKING_* variables)."""
    # A batch job does not send usage data anywhere unless its operator says so.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def _explained(server: str) -> Iterator[None]:
    """MLflow's refusals as one line each; anything else (the server down, a 5xx) propagates and is retried."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in _REFUSED:
            raise MlflowSourceError(
                f"MLflow at {server} refused the request: {exc.message}",
                remedy="give the MLflow connection a login and password (or login 'token' and a token) it accepts",
            ) from None
        raise


def resolve(client: Any, ref: MlflowModelRef, server: str) -> MlflowVersion:
    """The version ``ref`` names now (an alias is read once, here), with where its files are."""
    from mlflow.exceptions import MlflowException

    with _explained(server):
        try:
            if ref.alias is not None:
                found = client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                found = client.get_model_version(ref.name, str(ref.version))
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise
            raise _missing(client, ref, server) from None
        version = MlflowVersion(
            name=found.name,
            version=int(found.version),
            run_id=found.run_id or "",
            source=found.source or "",
            artifact_uri=client.get_model_version_download_uri(found.name, found.version),
            alias=ref.alias,
        )
    if found.status != "READY":
        raise MlflowSourceError(f"{version.label} is {found.status}, not READY: its files may be incomplete")
    return version


def _missing(client: Any, ref: MlflowModelRef, server: str) -> MlflowSourceError:
    """Which part of ``ref`` does not exist: the model, its alias (naming the known ones) or its version."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(ref.name)
    except MlflowException:
        return MlflowSourceError(f"MLflow at {server} has no registered model {ref.name!r} ({ref.uri})")
    if ref.alias is not None:
        known = ", ".join(sorted(registered.aliases or {})) or "none"
        return MlflowSourceError(f"MLflow model {ref.name!r} has no alias {ref.alias!r}; known aliases: {known}")
    return MlflowSourceError(f"MLflow model {ref.name!r} has no version {ref.version} ({ref.uri})")


def download(version: MlflowVersion, tracking_uri: str) -> MlflowArtifact:
    """The scikit-learn model file of ``version`` (read from its MLmodel), in memory."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(version.artifact_uri, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="batchscore-mlflow-") as folder:

        def fetch(path: str) -> bytes:
            """One file's bytes; a missing file is permanent, anything else (the store unreachable) is retried."""
            try:
                return Path(repository.download_artifacts(path, folder)).read_bytes()
            except FileNotFoundError:
                pass
            except MlflowException as exc:
                if exc.error_code not in _NOT_FOUND and "404 Client Error" not in exc.message:
                    raise
            raise MlflowSourceError(f"{version.label}: {path} is missing from its artifacts at {version.artifact_uri}")

        mlmodel = yaml.safe_load(fetch("MLmodel")) or {}
        flavours = mlmodel.get("flavors") or {}
        flavour = flavours.get("sklearn")
        if not isinstance(flavour, dict):
            raise MlflowSourceError(
                f"{version.label} is not a scikit-learn model (flavours: {', '.join(sorted(flavours)) or 'none'}); "
                "log it with mlflow.sklearn.log_model",
                remedy="point model.mlflow at a model logged with mlflow.sklearn",
            )
        path = str(flavour.get("pickled_model") or "")
        if not ARTIFACT_PATH.match(path) or ".." in path.split("/"):
            raise MlflowSourceError(f"{version.label}: its MLmodel names an unusable model file {path!r}")
        data = fetch(path)
    return MlflowArtifact(
        path=path,
        data=data,
        format=str(flavour.get("serialization_format") or "pickle"),  # what MLflow itself assumes when absent
        sklearn_version=str(flavour.get("sklearn_version") or ""),
        signature=_signature_inputs(mlmodel),
    )


def _signature_inputs(mlmodel: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The named input columns of the model's signature (MLmodel keeps them as a JSON string)."""
    import json

    raw = (mlmodel.get("signature") or {}).get("inputs")
    try:
        columns = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return ()
    return tuple(c for c in columns if isinstance(c, dict) and isinstance(c.get("name"), str))


def run_metrics(client: Any, run_id: str) -> dict[str, float]:
    """The training run's metrics (latest values), for the manifest; none when the run is gone."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        return {}
    return {str(k): float(v) for k, v in metrics.items()}
