"""MLflow model files read without a server: what is loaded, what is refused, where the features come from."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from batchscore.models.manifest import RegistryError
from batchscore.models.mlflow_import import features_from, read_estimator
from batchscore.models.mlflow_source import MlflowArtifact, MlflowSourceError, MlflowVersion
from tests.hostile_models import hostile_files

VERSION = MlflowVersion("churn", 3, "run1", "models:/m-1", "mlflow-artifacts:/0/models/m-1/artifacts", "champion")


def artifact(data: bytes, fmt: str, signature: tuple[dict[str, Any], ...] = ()) -> MlflowArtifact:
    return MlflowArtifact("model.pkl" if fmt != "skops" else "model.skops", data, fmt, "1.9.1", signature)


class Hostile:
    """Creates a file when unpickled: whether it exists says whether code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def fitted(on_frame: bool) -> Any:
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((60, 2))
    return LogisticRegression().fit(pd.DataFrame(x, columns=["tenure_days", "plan"]) if on_frame else x, x[:, 0] > 0.5)


def test_a_pickle_runs_nothing_unless_its_exact_bytes_are_pinned(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    hostile = artifact(pickle.dumps(Hostile(marker)), "cloudpickle")
    with pytest.raises(MlflowSourceError, match=r"is stored as cloudpickle, which runs code when loaded.*pin model"):
        read_estimator(VERSION, hostile, None)
    with pytest.raises(MlflowSourceError, match=r"is not the one pinned in model\.sha256"):
        read_estimator(VERSION, hostile, "0" * 64)
    assert not marker.exists()
    model = fitted(True)
    good = artifact(pickle.dumps(model), "pickle")
    loaded = read_estimator(VERSION, good, hashlib.sha256(good.data).hexdigest())
    assert loaded.coef_.tolist() == model.coef_.tolist()


def test_skops_is_read_under_our_allowlist_whatever_the_files_mlmodel_trusts() -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    model = fitted(True)
    assert (
        read_estimator(VERSION, artifact(skops.io.dumps(model), "skops"), None).coef_.tolist() == model.coef_.tolist()
    )
    calls_the_shell = skops.io.dumps(FunctionTransformer(func=os.system))
    with pytest.raises(RegistryError, match=r"holds types outside the allowlist: \w+\.system"):
        read_estimator(VERSION, artifact(calls_the_shell, "skops"), None)


def test_features_come_from_the_estimator_else_from_the_signature() -> None:
    signature = ({"name": "tenure_days", "type": "long"}, {"name": "plan", "type": "string"})
    from_frame = features_from(VERSION, fitted(True), signature)
    assert [(f.name, f.kind, f.source_type) for f in from_frame] == [
        ("tenure_days", "numeric", "int64"),
        ("plan", "numeric", "string"),  # the estimator saw numbers; the signature's type is kept for plan's check
    ]
    from_signature = features_from(VERSION, fitted(False), signature)
    assert [(f.name, f.kind, f.source_type) for f in from_signature] == [
        ("tenure_days", "numeric", "int64"),
        ("plan", "categorical", "string"),
    ]
    with pytest.raises(MlflowSourceError, match="has no feature names: fit it on a pandas DataFrame"):
        features_from(VERSION, fitted(False), ())
    with pytest.raises(MlflowSourceError, match=r"unsupported types: when \(datetime\)"):
        features_from(VERSION, fitted(False), ({"name": "when", "type": "datetime"},))


def test_plan_names_the_missing_tracking_server_and_where_to_give_it() -> None:
    import yaml

    from batchscore.pipeline.config import parse_config
    from batchscore.run.planning import Endpoints, PlanError, resolve_model

    data = yaml.safe_load((Path(__file__).parents[3] / "include" / "pipelines" / "churn.yaml").read_text())
    data["model"] = {"mlflow": "models:/churn@champion", "mlflow_conn_id": "mlflow_prod"}
    config = parse_config(data, Path("churn.yaml"))
    with pytest.raises(PlanError, match=r"takes its model from MLflow \(models:/churn@champion\) but no tracking") as e:
        resolve_model(config, Endpoints("postgresql:///w", "postgresql:///s", "/nowhere"), None)
    assert e.value.remedy == "add the Airflow connection mlflow_prod (or set MLFLOW_TRACKING_URI)"


@pytest.mark.parametrize("way", sorted(hostile_files(Path("/nonexistent/marker"))))
def test_a_hand_made_hostile_skops_file_from_mlflow_is_refused_and_runs_nothing(tmp_path: Path, way: str) -> None:
    data = hostile_files(tmp_path / "code-ran")[way]
    with pytest.raises(RegistryError, match="outside the allowlist"):
        read_estimator(VERSION, artifact(data, "skops"), None)
    assert not list(tmp_path.iterdir())
