"""MLflow as a model source, against a real MLflow tracking server and the embedded PostgreSQL.

Models are logged to the server the way a data scientist does (``mlflow.sklearn.log_model``,
registered, an alias set); the tests then tamper with the server's artifact folder directly,
as someone with access to the artifact store could.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml

from batchscore.cli.main import main as cli_main
from batchscore.errors import PermanentError
from batchscore.local.demo.warehouse import NUMERIC_FEATURES
from batchscore.models.manifest import ModelManifest
from batchscore.models.mlflow_source import MlflowSourceError
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig, parse_config
from batchscore.pipeline.windows import Window
from batchscore.run.planning import Endpoints, RunPlan, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from tests.conftest import WAREHOUSE_DAYS, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import REPO, run_record, stored_scores
from tests.mlflow_server import MlflowServer
from tests.registry_crash import CRASH_EXIT

pytestmark = pytest.mark.integration
MODEL = "churn_mlf"  # skops (MLflow's default): v1 and v2, alias champion -> v1
PICKLED = "churn_mlf_pickle"  # serialization_format="pickle": v1
TABLE = "scoring.churn_mlflow_scores"


@dataclass(frozen=True)
class Logged:
    """One registered MLflow model version: the fitted estimator itself and its file on the server."""

    estimator: Any
    version: int
    run_id: str
    file: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.file.read_bytes()).hexdigest()


def day(n: int) -> Window:
    return Window(*day_window(WAREHOUSE_END - timedelta(days=n)))


def window_rows(url: str, window: Window) -> pd.DataFrame:
    """The window's rows as the model sees them (float features, NaN for NULL) and the outcome, by customer_id."""
    columns = ", ".join(("customer_id", *NUMERIC_FEATURES, "churned"))
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            f"SELECT {columns} FROM warehouse.customer_activity WHERE event_time >= %s AND event_time < %s",
            (window.start, window.end),
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description]).set_index("customer_id")
    assert frame.index.is_unique
    return frame.astype(float)


def window_frame(url: str, window: Window) -> pd.DataFrame:
    return window_rows(url, window)[list(NUMERIC_FEATURES)]


def fit(url: str, window: Window, c: float) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = window_rows(url, window)
    estimator = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(C=c))
    return estimator.fit(rows[list(NUMERIC_FEATURES)], rows["churned"].astype(int))


def log(server: MlflowServer, name: str, estimator: Any, fmt: str) -> Logged:
    import mlflow
    import mlflow.sklearn

    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            registered_model_name=name,
            serialization_format=fmt,
            skops_trusted_types=["numpy.dtype"] if fmt == "skops" else None,
            pip_requirements=[],
        )
    client = mlflow.MlflowClient(server.uri)
    location = client.get_model_version_download_uri(name, str(info.registered_model_version))
    relative = location.removeprefix("mlflow-artifacts:/")
    file = server.artifacts / relative / ("model.skops" if fmt == "skops" else "model.pkl")
    assert file.exists(), file
    return Logged(estimator, int(info.registered_model_version), run.info.run_id, file)


@pytest.fixture(scope="module")
def logged(mlflow_server: MlflowServer, services: Services) -> dict[str, Logged]:
    """Two versions of MODEL (champion -> v1) and a pickled PICKLED v1, fitted on the warehouse's first days."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(mlflow_server.uri)
    first = day(WAREHOUSE_DAYS)
    models = {
        "v1": log(mlflow_server, MODEL, fit(services.warehouse_url, first, c=1.0), "skops"),
        "v2": log(mlflow_server, MODEL, fit(services.warehouse_url, day(WAREHOUSE_DAYS - 1), c=0.01), "skops"),
        "pickle": log(mlflow_server, PICKLED, fit(services.warehouse_url, first, c=0.1), "pickle"),
    }
    mlflow.MlflowClient(mlflow_server.uri).set_registered_model_alias(MODEL, "champion", "1")
    return models


def pipeline(mlflow_uri: str, **model: object) -> PipelineConfig:
    """churn on the demo's numeric features, its model from MLflow, writing TABLE."""
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(
        name="churn_mlflow",
        features=list(NUMERIC_FEATURES),
        model={"mlflow": mlflow_uri, **model},
        output={"conn_id": "scores_db", "table": TABLE},
    )
    data["execution"].update(slice_rows=1_000)  # a test day of 3,000 rows: as many slices as max_slices allows
    return parse_config(data, Path("churn_mlflow.yaml"))


def endpoints(services: Services, server: MlflowServer) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry, mlflow_uri=server.uri)


def imported(services: Services, plan: RunPlan, name: str = MODEL) -> ModelManifest:
    return ModelRegistry(services.registry).resolve(name, str(plan.model_version))


def test_plan_resolves_the_alias_once_and_every_slice_scores_that_version(
    services: Services, mlflow_server: MlflowServer, logged: dict[str, Logged]
) -> None:
    from mlflow import MlflowClient

    config, ep, window, v1 = (
        pipeline(f"models:/{MODEL}@champion"),
        endpoints(services, mlflow_server),
        day(4),
        logged["v1"],
    )
    plan = plan_run(config, ep, window=window, run_id="mlf__alias", max_slices=2)
    manifest = imported(services, plan)
    origin = manifest.training["source"]["mlflow"]
    assert (origin["name"], origin["version"], origin["run_id"], origin["format"]) == (MODEL, 1, v1.run_id, "skops")
    assert origin["tracking_uri"] == mlflow_server.uri
    assert origin["source"].startswith("models:/m-")  # MLflow 3: the logged model the version was made from
    assert str(v1.file.parent).endswith(origin["artifact_uri"].removeprefix("mlflow-artifacts:/"))
    # The skops bytes are kept as MLflow has them: one sha256 names the model in both registries.
    assert plan.model_sha256 == manifest.sha256 == origin["artifact_sha256"] == v1.sha256
    assert manifest.feature_names == NUMERIC_FEATURES
    assert manifest.task == "classifier"
    source = run_record(services.scores_url, "churn_mlflow", "mlf__alias")["model_source"]  # type: ignore[index]
    assert source["kind"] == "mlflow"
    assert source["model_uri"] == f"models:/{MODEL}@champion"
    assert (source["alias"], source["version"], source["run_id"]) == ("champion", 1, v1.run_id)
    assert (source["artifact_sha256"], source["registry_version"]) == (v1.sha256, plan.model_version)

    client = MlflowClient(mlflow_server.uri)
    client.set_registered_model_alias(MODEL, "champion", "2")  # moved after plan, before any slice runs
    try:
        results = [score_slice(config, ep, plan, s) for s in plan.key_slices]
        publish_run(config, ep, plan, results)
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")

    stored = stored_scores(services.scores_url, TABLE, window.start, window.end)
    frame = window_frame(services.warehouse_url, window)
    assert len(plan.key_slices) == 2
    assert len(stored) == len(frame) > 2_000
    x = frame.loc[stored.index]
    np.testing.assert_allclose(stored["score"], v1.estimator.predict_proba(x)[:, 1], rtol=0, atol=1e-12)
    assert np.abs(stored["score"] - logged["v2"].estimator.predict_proba(x)[:, 1]).max() > 1e-3  # v2 would differ
    assert set(stored["model_version"]) == {plan.model_version}
    assert set(stored["model_sha256"]) == {v1.sha256}
    record = run_record(services.scores_url, "churn_mlflow", "mlf__alias")
    assert record is not None
    assert record["status"] == "success"
    assert record["model_source"] == source


def test_an_import_is_reused_and_a_moved_alias_is_followed_by_the_next_plan(
    services: Services, mlflow_server: MlflowServer, logged: dict[str, Logged]
) -> None:
    from mlflow import MlflowClient

    ep, window = endpoints(services, mlflow_server), day(5)
    first = plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__v1_a", dry_run=True)
    versions = ModelRegistry(services.registry).versions(MODEL)
    again = plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__v1_b", dry_run=True)
    assert again.model_version == first.model_version
    assert ModelRegistry(services.registry).versions(MODEL) == versions  # nothing imported twice

    client = MlflowClient(mlflow_server.uri)
    client.set_registered_model_alias(MODEL, "champion", "2")
    try:
        moved = plan_run(pipeline(f"models:/{MODEL}@champion"), ep, window=window, run_id="mlf__moved", dry_run=True)
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
    manifest = imported(services, moved)
    assert manifest.training["source"]["mlflow"]["version"] == 2
    assert moved.model_version != first.model_version
    assert moved.model_sha256 == logged["v2"].sha256
    # A trigger form's model_version picks another MLflow version or alias of the same model.
    override = plan_run(
        pipeline(f"models:/{MODEL}@champion"), ep, window=window, run_id="mlf__override", model_ref="2", dry_run=True
    )
    assert override.model_version == moved.model_version


def test_a_changed_or_removed_mlflow_artifact_fails_its_checksum(
    services: Services, mlflow_server: MlflowServer, logged: dict[str, Logged]
) -> None:
    ep, window, v1 = endpoints(services, mlflow_server), day(6), logged["v1"]
    plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__before", dry_run=True)  # imported
    original, sha = v1.file.read_bytes(), v1.sha256
    versions = ModelRegistry(services.registry).versions(MODEL)
    v1.file.write_bytes(logged["v2"].file.read_bytes())  # a loadable model, but not the one logged as v1
    try:
        with pytest.raises(MlflowSourceError) as changed:
            plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__changed")
        with pytest.raises(MlflowSourceError) as pinned:
            plan_run(pipeline(f"models:/{MODEL}/1", sha256=sha), ep, window=window, run_id="mlf__pinned")
        v1.file.unlink()
        with pytest.raises(MlflowSourceError, match=r"v1: model\.skops is missing from its artifacts at mlflow-"):
            plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__removed")
    finally:
        v1.file.write_bytes(original)
    assert f"MLflow model '{MODEL}' v1: artifact model.skops sha256 {logged['v2'].sha256} does not match" in str(
        changed.value
    )
    assert f"({sha}); the file in MLflow was changed" in str(changed.value)
    assert f"is not the one pinned in model.sha256 ({sha})" in str(pinned.value)
    assert "\n" not in str(changed.value) + str(pinned.value)
    assert ModelRegistry(services.registry).versions(MODEL) == versions
    assert run_record(services.scores_url, "churn_mlflow", "mlf__changed") is None  # failed before recording


class Hostile:
    """A pickle that creates a file when it is loaded: proof of whether code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickle_flavour_needs_its_sha256_pinned_and_never_runs_unpinned(
    services: Services, mlflow_server: MlflowServer, logged: dict[str, Logged], tmp_path: Path
) -> None:
    ep, window, model = endpoints(services, mlflow_server), day(7), logged["pickle"]
    uri = f"models:/{PICKLED}/1"
    with pytest.raises(MlflowSourceError) as refused:
        plan_run(pipeline(uri), ep, window=window, run_id="mlf__pickle_refused")
    message = str(refused.value)
    assert "\n" not in message
    assert f"MLflow model '{PICKLED}' v1 is stored as pickle, which runs code when loaded" in message
    assert f"pin model.sha256: {model.sha256}" in message
    assert ModelRegistry(services.registry).versions(PICKLED) == []

    pin = model.sha256
    plan = plan_run(pipeline(uri, sha256=pin), ep, window=window, run_id="mlf__pickle_pinned", dry_run=True)
    manifest = imported(services, plan, PICKLED)
    origin = manifest.training["source"]["mlflow"]
    assert (origin["format"], origin["artifact_sha256"]) == ("pickle", pin)
    assert manifest.sha256 != pin
    assert manifest.artifact == f"artifacts/{manifest.sha256}.skops"
    frame = window_frame(services.warehouse_url, window)
    np.testing.assert_allclose(
        ModelRegistry(services.registry).load(manifest).predict_proba(frame)[:, 1],
        model.estimator.predict_proba(frame)[:, 1],
        rtol=0,
        atol=1e-12,
    )

    marker = tmp_path / "code-ran"
    original = model.file.read_bytes()
    model.file.write_bytes(pickle.dumps(Hostile(marker)))
    try:
        with pytest.raises(MlflowSourceError, match="is not the one pinned"):
            plan_run(pipeline(uri, sha256=pin), ep, window=window, run_id="mlf__pickle_swapped")
        with pytest.raises(MlflowSourceError, match="does not match the one imported"):
            plan_run(pipeline(uri), ep, window=window, run_id="mlf__pickle_swapped_unpinned")
    finally:
        model.file.write_bytes(original)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/no_such_model@champion", "has no registered model 'no_such_model' (models:/no_such_model@champion)"),
        (f"models:/{MODEL}@prod", f"MLflow model '{MODEL}' has no alias 'prod'; known aliases: champion"),
        (f"models:/{MODEL}/99", f"MLflow model '{MODEL}' has no version 99 (models:/{MODEL}/99)"),
    ],
)
def test_an_unknown_model_alias_or_version_is_one_line(
    services: Services, mlflow_server: MlflowServer, logged: dict[str, Logged], uri: str, message: str
) -> None:
    with pytest.raises(MlflowSourceError) as error:
        plan_run(pipeline(uri), endpoints(services, mlflow_server), window=day(8), run_id="mlf__unknown")
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, PermanentError)


def test_models_register_imports_from_mlflow_once(
    mlflow_server: MlflowServer,
    logged: dict[str, Logged],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(tmp_path / "registry"))
    argv = ["models", "register", "--name", "churn_cli", "--mlflow", f"models:/{MODEL}/2"]
    argv += ["--mlflow-uri", mlflow_server.uri, "--alias", "champion"]
    assert cli_main(argv) == 0
    assert cli_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    run_id = logged["v2"].run_id
    assert out[0] == (
        f"registered churn_cli v1 (classifier) from MLflow {MODEL} v2 (run {run_id}), sha256 {logged['v2'].sha256}"
    )
    assert out[1].startswith("features: tenure_days (numeric), monthly_spend (numeric)")
    assert out[2].startswith("already imported as churn_cli v1 (classifier)")
    assert ModelRegistry(str(tmp_path / "registry")).aliases("churn_cli") == {"champion": 1}


def test_models_register_from_mlflow_with_a_reference_is_what_plan_reuses(
    mlflow_server: MlflowServer,
    logged: dict[str, Logged],
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry_root = tmp_path / "registry"
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(registry_root))
    window_frame(services.warehouse_url, day(WAREHOUSE_DAYS - 1)).to_parquet(tmp_path / "train.parquet")
    argv = ["models", "register", "--name", "churn_ref", "--mlflow", f"models:/{MODEL}/2"]
    argv += ["--mlflow-uri", mlflow_server.uri]
    assert cli_main(argv) == 0  # imported without a reference first
    assert cli_main([*argv, "--reference", str(tmp_path / "train.parquet")]) == 0
    out = capsys.readouterr().out
    assert "registered churn_ref v2 (classifier)" in out
    assert "drift reference: " in out
    registry = ModelRegistry(str(registry_root))
    first, second = registry.resolve("churn_ref", "1"), registry.resolve("churn_ref", "2")
    assert first.reference is None
    assert second.reference is not None
    assert second.sha256 == first.sha256 == logged["v2"].sha256  # the same bytes, now with a reference
    assert {b["column"] for b in second.reference["bins"]} >= {"tenure_days", "(score)"}
    assert cli_main([*argv, "--reference", str(tmp_path / "train.parquet")]) == 0
    assert "already imported as churn_ref v2" in capsys.readouterr().out
    assert registry.versions("churn_ref") == [1, 2]


def test_an_import_killed_before_its_manifest_leaves_later_imports_and_latest_unaffected(
    mlflow_server: MlflowServer,
    logged: dict[str, Logged],
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The import reads every version of the name to find an earlier one: a dead writer's leftovers are none.

    Its own registry (a fresh folder) under the name plan imports MLflow's model as.
    """
    root = tmp_path / "registry"
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(root))
    base = ["models", "register", "--name", MODEL, "--mlflow-uri", mlflow_server.uri]
    assert cli_main([*base, "--mlflow", f"models:/{MODEL}/2"]) == 0
    env = {**os.environ, "BATCHSCORE_MODEL_REGISTRY": str(root), "MLFLOW_DISABLE_TELEMETRY": "true"}
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.registry_crash", *base, "--mlflow", f"models:/{MODEL}/1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert (root / MODEL / "artifacts" / f"{logged['v1'].sha256}.skops").is_file(), "killed after its artifact"
    registry = ModelRegistry(str(root))
    assert registry.versions(MODEL) == [1]
    assert registry.resolve(MODEL, "latest").version == 1
    # A registry written before kept artifacts in the version's folder: its dead writer left this.
    orphan = root / MODEL / "versions" / "2"
    orphan.mkdir()
    (orphan / "model.skops").write_bytes(logged["v1"].file.read_bytes())

    capsys.readouterr()
    assert cli_main([*base, "--mlflow", f"models:/{MODEL}/2"]) == 0
    assert capsys.readouterr().out.startswith(f"already imported as {MODEL} v1 (classifier)")
    ep = Endpoints(services.warehouse_url, services.scores_url, str(root), mlflow_uri=mlflow_server.uri)
    window = day(5)
    plan = plan_run(pipeline(f"models:/{MODEL}/1"), ep, window=window, run_id="mlf__after_crash", dry_run=True)
    assert plan.model_version == 3, "the import the dead writer began, done now, under a number never used"
    assert plan.model_sha256 == logged["v1"].sha256
    assert registry.versions(MODEL) == [1, 3]
    assert registry.resolve(MODEL, "latest").version == 3
