"""``batchscore models``: register a file, list, show, promote; each bad input refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from batchscore.cli.main import main
from batchscore.models.registry import ModelRegistry
from tests.hostile_models import hostile_files


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(tmp_path / "registry"))
    return ModelRegistry(str(tmp_path / "registry"))


@pytest.fixture
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"plan": rng.choice(["basic", "premium"], 300), "tenure_days": rng.normal(size=300)})
    return x, ((x["plan"] == "premium") ^ (x["tenure_days"] > 0)).astype(int).to_numpy()


def pipeline_model(frame: tuple) -> object:
    x, y = frame
    prep = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="passthrough")
    return make_pipeline(prep, LogisticRegression()).fit(x, y)


def run(*args: str) -> int:
    return main(["models", *args])


def test_register_a_skops_file_with_features_from_the_estimator(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.skops"
    sio.dump(pipeline_model(frame), path)
    assert run("register", "--name", "churn2", "--file", str(path), "--alias", "challenger") == 0
    out = capsys.readouterr().out
    assert "registered churn2 v1 (classifier)" in out
    assert "features: plan (categorical), tenure_days (numeric)" in out
    manifest = registry.resolve("churn2", "challenger")
    assert manifest.features[0].categories == ("basic", "premium")
    assert manifest.training["source"]["format"] == "skops"


def test_a_pickle_needs_trust_and_is_stored_as_skops(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(pipeline_model(frame), path)
    assert run("register", "--name", "m", "--file", str(path)) == 1
    assert "runs code when it is loaded" in capsys.readouterr().err
    assert registry.versions("m") == []
    assert run("register", "--name", "m", "--file", str(path), "--trust-pickle", "0" * 64) == 1
    assert "is not the one given to --trust-pickle" in capsys.readouterr().err
    assert registry.versions("m") == []
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert run("register", "--name", "m", "--file", str(path), "--trust-pickle", digest) == 0
    manifest = registry.resolve("m", "1")
    assert manifest.artifact.endswith(".skops")
    assert manifest.training["source"]["format"] == "joblib"
    assert manifest.training["source"]["file_sha256"] == digest


def test_list_show_and_promote_record_the_old_target(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.skops"
    sio.dump(pipeline_model(frame), path)
    for _ in range(2):
        assert run("register", "--name", "churn", "--file", str(path)) == 0
    assert run("promote", "churn", "--alias", "champion", "--version", "1") == 0
    assert run("promote", "churn", "--alias", "champion", "--version", "2") == 0
    assert "churn: champion -> v2 (was v1)" in capsys.readouterr().out
    assert run("list") == 0
    assert "churn: versions [1, 2]; champion->v2" in capsys.readouterr().out
    assert run("show", "churn", "champion") == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\ndrift reference:")])["version"] == 2
    assert "drift reference: none (register with --reference to watch drift)" in out
    assert "used by pipelines: churn" in out  # the shipped churn pipeline names this model
    assert "alias change: champion v1 -> v2" in out


def test_promote_expect_refuses_when_the_alias_moved_meanwhile(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.skops"
    sio.dump(pipeline_model(frame), path)
    for _ in range(3):
        assert run("register", "--name", "churn", "--file", str(path)) == 0
    assert run("promote", "churn", "--alias", "champion", "--version", "1", "--expect", "unset") == 0
    assert run("promote", "churn", "--alias", "champion", "--version", "2", "--expect", "1") == 0
    capsys.readouterr()
    # Someone reviewed "v1 -> v3", but v2 landed first: the promote is refused and changes nothing.
    assert run("promote", "churn", "--alias", "champion", "--version", "3", "--expect", "1") == 1
    assert "alias 'champion' points at v2, not v1; nothing was changed" in capsys.readouterr().err
    assert registry.aliases("churn") == {"champion": 2}
    assert [c["to"] for c in registry.alias_history("churn")] == [1, 2]


def test_register_with_a_reference_file_records_the_drift_bins(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, _ = frame
    model = tmp_path / "model.skops"
    sio.dump(pipeline_model(frame), model)
    x.to_parquet(tmp_path / "train.parquet")
    x.to_csv(tmp_path / "train.csv", index=False)
    for reference in ("train.parquet", "train.csv"):
        args = ["--name", "ref", "--file", str(model), "--reference", str(tmp_path / reference)]
        assert run("register", *args) == 0
        assert f"drift reference: 300 rows from {reference}" in capsys.readouterr().out
    manifest = registry.resolve("ref", "latest")
    assert manifest.reference is not None
    bins = {b["column"]: b for b in manifest.reference["bins"]}
    assert set(bins) == {"plan", "tenure_days", "(score)"}
    assert bins["plan"]["categories"] == ["basic", "premium"]
    counts = x["plan"].value_counts(normalize=True)
    assert bins["plan"]["reference"] == pytest.approx([counts["basic"], counts["premium"], 0.0, 0.0])
    expected_edges = np.unique(np.quantile(x["tenure_days"], np.arange(1, 10) / 10))
    assert bins["tenure_days"]["edges"] == pytest.approx(expected_edges.tolist())
    assert run("show", "ref") == 0
    assert "drift reference: 300 rows from train.csv; bins for plan, tenure_days, (score)" in capsys.readouterr().out
    x[["plan"]].to_parquet(tmp_path / "narrow.parquet")
    (tmp_path / "notes.txt").write_text("x")
    for bad, message in (
        ("narrow.parquet", "the reference has no column tenure_days"),
        ("notes.txt", "a reference is a .parquet or .csv file, not .txt"),
        ("missing.parquet", "cannot read the reference"),
    ):
        assert run("register", "--name", "ref", "--file", str(model), "--reference", str(tmp_path / bad)) == 1
        assert message in capsys.readouterr().err
    assert registry.versions("ref") == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("register", "--name", "m", "--file", "/nonexistent/model.skops"), "cannot read"),
        (("register", "--name", "Bad Name", "--file", "x.skops"), "must be a lower-case identifier"),
        (("register", "--name", "m", "--file", "model.txt"), "unknown model format"),
        (("promote", "m", "--alias", "champion", "--version", "7"), "has no version 7"),
        (("promote", "m", "--alias", "x; rm -rf /", "--version", "1"), "must be an identifier"),
        (("promote", "m", "--alias", "champion", "--version", "latest"), "must be a version number"),
        (("promote", "m", "--alias", "champion", "--version", "1", "--expect", "v1"), "must be a version number or"),
        (("show", "nope"), "no model named 'nope'"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], args, message
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "model.skops"
    sio.dump(pipeline_model(frame), path)
    run("register", "--name", "m", "--file", str(path))
    (tmp_path / "model.txt").write_text("not a model")
    capsys.readouterr()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert run(*args) == 1
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert message in err
    assert "\n" not in err


def test_a_model_without_feature_names_or_with_foreign_code_is_refused(
    registry: ModelRegistry, frame: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = frame
    bare = tmp_path / "bare.skops"
    sio.dump(LogisticRegression().fit(x[["tenure_days"]].to_numpy(), y), bare)
    assert run("register", "--name", "m", "--file", str(bare)) == 1
    assert "has no feature names: fit it on a pandas DataFrame" in capsys.readouterr().err
    hostile = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
    hostile.steps[1] = ("m", LogisticRegression().fit(x[["tenure_days"]], y))
    evil = tmp_path / "evil.skops"
    sio.dump(hostile, evil)
    assert run("register", "--name", "m", "--file", str(evil)) == 1
    assert "outside the allowlist" in capsys.readouterr().err
    assert registry.versions("m") == []


@pytest.mark.parametrize("way", sorted(hostile_files(Path("/nonexistent/marker"))))
def test_a_hand_made_hostile_file_is_refused_at_register_and_runs_nothing(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], way: str
) -> None:
    payload = tmp_path / "payload"
    payload.mkdir()
    evil = tmp_path / "hostile.skops"
    evil.write_bytes(hostile_files(payload / "code-ran")[way])
    assert run("register", "--name", "m", "--file", str(evil)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "outside the allowlist" in err
    assert "\n" not in err
    assert not list(payload.iterdir()), "nothing the file named ran"
    assert registry.versions("m") == []
