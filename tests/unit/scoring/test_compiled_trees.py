"""The compiled tree walk gives scikit-learn's histogram gradient boosting output bit for bit, or steps aside."""

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from batchscore.scoring.compiled_trees import LANES, CompiledTrees, accelerate

COLUMNS = ["a", "b", "c", "d"]


def data(rows: int, seed: int = 0) -> pd.DataFrame:
    """Features with NaNs in two columns (the missing-value branches) and an infinite value."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    frame.loc[frame.index % 7 == 0, "b"] = np.nan
    frame.loc[frame.index % 11 == 0, "d"] = np.nan
    if seed:
        frame.loc[3, "a"] = np.inf  # scored, never trained on
    return frame


def target(frame: pd.DataFrame) -> np.ndarray:
    return frame["a"].fillna(0).to_numpy() + frame["b"].fillna(1).to_numpy() * frame["c"].to_numpy()


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return data(3000)


@pytest.fixture(scope="module")
def score() -> pd.DataFrame:
    return data(5 * LANES + 3, seed=1)  # whole lanes and a tail of single rows


def test_binary_classifier_probabilities_and_classes_are_identical(train: pd.DataFrame, score: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(train, target(train) > 0)
    fast = accelerate(model, COLUMNS)
    assert isinstance(fast, CompiledTrees)
    assert np.array_equal(fast.predict_proba(score), model.predict_proba(score))
    assert np.array_equal(fast.predict(score), model.predict(score))
    assert list(fast.classes_) == list(model.classes_)  # everything else is the model's


def test_multiclass_classifier_is_identical(train: pd.DataFrame, score: pd.DataFrame) -> None:
    labels = np.digitize(target(train), [-1.0, 0.0, 1.0]).astype(str)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train, labels)
    fast = accelerate(model, COLUMNS)
    assert isinstance(fast, CompiledTrees)
    assert np.array_equal(fast.predict_proba(score), model.predict_proba(score))
    assert np.array_equal(fast.predict(score), model.predict(score))


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_regressor_is_identical_through_its_link(train: pd.DataFrame, score: pd.DataFrame, loss: str) -> None:
    y = np.exp(target(train) / 4) if loss == "poisson" else target(train)
    model = HistGradientBoostingRegressor(max_iter=25, loss=loss, random_state=0).fit(train, y)
    assert np.array_equal(accelerate(model, COLUMNS).predict(score), model.predict(score))


def test_model_fitted_on_another_column_order_reads_the_right_columns(train: pd.DataFrame, score: pd.DataFrame) -> None:
    shuffled = ["c", "a", "d", "b"]
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train[shuffled], target(train) > 0)
    fast = accelerate(model, COLUMNS)  # frames arrive in the pipeline's order, not the model's
    assert np.array_equal(fast.predict_proba(score), model.predict_proba(score[shuffled]))


def test_model_fitted_without_names_uses_positions(train: pd.DataFrame, score: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train.to_numpy(), target(train) > 0)
    assert np.array_equal(accelerate(model, COLUMNS).predict_proba(score), model.predict_proba(score.to_numpy()))


def test_threads_split_the_rows_without_changing_a_bit(train: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train, target(train) > 0)
    fast = accelerate(model, COLUMNS)
    x = np.ascontiguousarray(data(50_003, seed=2).to_numpy())
    assert np.array_equal(fast.raw_predict(x, threads=2), fast.raw_predict(x, threads=1))


def test_no_rows_gives_no_scores(train: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(train, target(train) > 0)
    assert accelerate(model, COLUMNS).predict_proba(data(1).iloc[:0]).shape == (0, 2)


def test_other_models_are_left_to_scikit_learn(train: pd.DataFrame) -> None:
    y = target(train) > 0
    categorical = train.assign(c=pd.Categorical(np.where(train["c"] > 0, "x", "y")))
    hgb_categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype").fit(categorical, y)
    for model in (
        LogisticRegression().fit(train.fillna(0), y),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(train.fillna(0), y),
        hgb_categorical,
        HistGradientBoostingClassifier(),  # not fitted
    ):
        assert accelerate(model, COLUMNS) is model


@pytest.mark.parametrize("sparse", [False, True])
def test_pipeline_steps_transform_then_the_trees_are_compiled(train: pd.DataFrame, sparse: bool) -> None:
    def with_plan(frame: pd.DataFrame) -> pd.DataFrame:  # a category column, with missing values
        plan = np.where(frame["c"] > 0.5, "gold", np.where(frame["c"] < -0.5, "basic", None))
        return frame.assign(plan=pd.Series(plan, dtype=object, index=frame.index))

    categories = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=sparse),
    )
    prep = ColumnTransformer([("num", "passthrough", COLUMNS), ("cat", categories, ["plan"])])
    model = make_pipeline(prep, HistGradientBoostingClassifier(max_iter=20, random_state=0))
    model.fit(with_plan(train), target(train) > 0)
    scored = with_plan(data(200, seed=3))
    scored.loc[5, "plan"] = "platinum"  # unseen category: the encoder's business, as in scikit-learn
    fast = accelerate(model, [*COLUMNS, "plan"])
    assert isinstance(fast, CompiledTrees)
    assert np.array_equal(fast.predict_proba(scored), model.predict_proba(scored))
    assert np.array_equal(fast.predict(scored), model.predict(scored))
    assert not fast._fallback


def test_features_that_do_not_match_the_model_are_left_to_scikit_learn(train: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(train, target(train) > 0)
    assert accelerate(model, ["a", "b", "c", "x"]) is model
    assert accelerate(model, ["a", "b", "c"]) is model


def test_one_scorer_per_model_and_column_order(train: pd.DataFrame) -> None:
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(train, target(train) > 0)
    assert accelerate(model, COLUMNS) is accelerate(model, COLUMNS)


def test_a_difference_from_scikit_learn_switches_back_to_it(
    train: pd.DataFrame, score: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(train, target(train) > 0)
    broken = CompiledTrees(model, COLUMNS, np.arange(len(COLUMNS)))
    broken._value = broken._value + 1e-9  # a kernel that is off by a hair
    with caplog.at_level(logging.WARNING, logger="batchscore.scoring.compiled_trees"):
        assert np.array_equal(broken.predict_proba(score), model.predict_proba(score))
        assert np.array_equal(broken.predict_proba(score), model.predict_proba(score))
    assert "using scikit-learn" in caplog.text


def test_switched_off_by_environment(train: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(train, target(train) > 0)
    monkeypatch.setenv("BATCHSCORE_COMPILED_TREES", "0")
    assert accelerate(model, COLUMNS) is model


def test_threads_follow_the_callers_openmp_limit(train: pd.DataFrame) -> None:
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(train, target(train) > 0)
    fast = accelerate(model, COLUMNS)
    with threadpool_limits(limits=1):
        assert fast._threads() == 1  # parallel tasks x threads <= cores, as for scikit-learn's own predictor
    with threadpool_limits(limits=2):
        assert fast._threads() == 2
