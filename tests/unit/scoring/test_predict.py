"""Scoring batches: each model task's score and label, equal to the model's own output."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from batchscore.models.manifest import FeatureSpec
from batchscore.models.registry import ModelRegistry
from batchscore.scoring.features import to_model_frame
from batchscore.scoring.predict import score_batch, scorer, scores_schema

FEATURES = (FeatureSpec("a", "numeric", nullable=False), FeatureSpec("b", "numeric", nullable=False))


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})


# Scores are compared to 1e-12, not bit for bit: BLAS sums in another order for another batch size.
def score_with(model: object, frame: pd.DataFrame, tmp_path: Path) -> pa.Table:
    """Register ``model``, score ``frame`` plus a NULL row in batches of 128, return the scores."""
    registry = ModelRegistry(str(tmp_path / "registry"))
    manifest = registry.register("m", model, FEATURES)
    table = pa.table({"id": pa.array(range(len(frame) + 1), pa.int64())}).append_column(
        "a", pa.array([*frame["a"], None], pa.float64())
    )
    table = table.append_column("b", pa.array([*frame["b"], 0.0], pa.float64()))
    schema = scores_schema("id", pa.int64())
    scoring = scorer(registry.load(manifest), manifest)
    results = [
        score_batch(pa.Table.from_batches([b]), scoring, manifest, "id", "reject", schema)
        for b in table.to_batches(max_chunksize=128)
    ]
    assert sum(r.rows_in for r in results) == len(frame) + 1
    assert sum(r.scores.num_rows for r in results) == len(frame)
    assert sum(r.rejects.num_rows for r in results) == 1
    assert pa.concat_tables([r.rejects for r in results]).column("reason").to_pylist() == ["a is NULL"]
    return pa.concat_tables([r.scores for r in results])


def test_binary_classifier_scores_the_positive_class_and_labels_the_predicted_class(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    model = LogisticRegression().fit(frame, (frame["a"] > frame["b"]).astype(int))
    scores = score_with(model, frame, tmp_path)
    np.testing.assert_allclose(scores.column("score").to_numpy(), model.predict_proba(frame)[:, 1], rtol=0, atol=1e-12)
    assert scores.column("label").to_pylist() == [str(c) for c in model.predict(frame)]


def test_multiclass_classifier_scores_the_top_probability(frame: pd.DataFrame, tmp_path: Path) -> None:
    classes = np.where(frame["a"] > 0.5, "high", np.where(frame["a"] < -0.5, "low", "mid"))
    model = LogisticRegression().fit(frame, classes)
    scores = score_with(model, frame, tmp_path)
    np.testing.assert_allclose(
        scores.column("score").to_numpy(), model.predict_proba(frame).max(axis=1), rtol=0, atol=1e-12
    )
    assert scores.column("label").to_pylist() == list(model.predict(frame))


def test_regressor_scores_the_prediction_without_a_label(frame: pd.DataFrame, tmp_path: Path) -> None:
    model = LinearRegression().fit(frame, 2 * frame["a"] - frame["b"])
    scores = score_with(model, frame, tmp_path)
    np.testing.assert_allclose(scores.column("score").to_numpy(), model.predict(frame), rtol=0, atol=1e-12)
    assert scores.column("label").null_count == len(frame)


def test_clusterer_labels_the_cluster_without_a_score(frame: pd.DataFrame, tmp_path: Path) -> None:
    model = KMeans(3, n_init=1, random_state=0).fit(frame)
    scores = score_with(model, frame, tmp_path)
    assert scores.column("score").null_count == len(frame)
    assert scores.column("label").to_pylist() == [str(c) for c in model.predict(frame)]


def test_gradient_boosting_is_scored_by_compiled_trees_bit_for_bit(
    frame: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, frame["a"] * frame["b"] > 0)
    with caplog.at_level("INFO", logger="batchscore.scoring.compiled_trees"):
        scores = score_with(model, frame, tmp_path)
    assert "compiled trees" in caplog.text
    assert np.array_equal(scores.column("score").to_numpy(), model.predict_proba(frame)[:, 1])
    assert scores.column("label").to_pylist() == [str(c) for c in model.predict(frame)]


def test_all_numeric_model_frame_is_one_column_major_block() -> None:
    frame = to_model_frame(pa.table({"a": [1.0, None], "b": [3, 4]}), FEATURES)
    matrix = np.asarray(frame)
    assert matrix.flags["F_CONTIGUOUS"]
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, [[1.0, 3.0], [np.nan, 4.0]])
