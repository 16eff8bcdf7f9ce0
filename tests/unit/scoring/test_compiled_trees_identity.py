"""Bit-identity of the compiled trees with scikit-learn over randomly drawn models and data.

Each case draws its model (task, loss, classes, depth, leaves, iterations, categorical
features) and its data (missing values in training and scoring, +-inf, categories never
seen in training) from its own seed, so a failure names the case that reproduces it.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from batchscore.scoring.compiled_trees import MIN_ROWS_PER_THREAD, CompiledTrees, accelerate

LOSSES = ("squared_error", "absolute_error", "gamma", "poisson", "quantile")
CASES = 36
CATEGORIES = np.array(["red", "green", "blue", "cyan", "plum", "teal", "gold", "navy", "rust"], dtype=object)


def frame(rng: np.random.Generator, rows: int, numeric: int, categorical: int, *, scoring: bool) -> pd.DataFrame:
    """Numeric columns with NaN (and +-inf when scoring), categorical ones with NaN (and unseen values when scoring)."""
    columns: dict[str, object] = {}
    for j in range(numeric):
        values = rng.normal(size=rows) * (10.0 ** rng.integers(-2, 3))
        values[rng.random(rows) < 0.08] = np.nan
        if scoring:
            values[rng.random(rows) < 0.02] = np.inf
            values[rng.random(rows) < 0.02] = -np.inf
        columns[f"n{j}"] = values
    for j in range(categorical):
        known = CATEGORIES[: 3 + j]
        values = rng.choice(known, rows).astype(object)
        values[rng.random(rows) < 0.06] = np.nan
        if scoring:
            values[rng.random(rows) < 0.05] = "unseen"
        columns[f"c{j}"] = values
    return pd.DataFrame(columns)


def target(rng: np.random.Generator, x: pd.DataFrame) -> np.ndarray:
    signal = np.zeros(len(x))
    for name in x.columns:
        if name.startswith("n"):
            signal += rng.normal() * np.nan_to_num(x[name].to_numpy(dtype=float), nan=0.5)
        else:
            codes = pd.Categorical(x[name]).codes
            signal += rng.normal(size=codes.max() + 2)[codes]
    return (signal - signal.mean()) / (signal.std() or 1.0)


@functools.cache
def draw_model(case: int) -> tuple[object, pd.DataFrame, pd.DataFrame, np.random.Generator]:
    """Case ``case``'s fitted model, training frame, scoring frame and generator (drawn once per session)."""
    with threadpool_limits(limits=1):  # small fits: OpenMP threads would only wait for each other
        return _draw(case)


def _draw(case: int) -> tuple[object, pd.DataFrame, pd.DataFrame, np.random.Generator]:
    rng = np.random.default_rng(1000 + case)
    numeric, categorical = int(rng.integers(1, 6)), int(rng.integers(0, 3))
    train = frame(rng, 1500, numeric, categorical, scoring=False)
    if not case % 5:  # no missing values in training: NaN at scoring goes where most rows went
        train = train.fillna({c: 0.0 for c in train.columns if c.startswith("n")})
    cats = [c for c in train.columns if c.startswith("c")]
    if case % 2:
        train[cats] = train[cats].astype("category")  # categorical_features="from_dtype" (the default)
        features: object = "from_dtype"
    else:
        features = cats or None  # named
    leaves = [2, 7, 31, 33, 63, 70, None][case % 7]
    params = {
        "max_iter": int(rng.integers(1, 25)),
        "max_leaf_nodes": leaves,
        "max_depth": int(rng.integers(2, 9)) if leaves is None or case % 3 == 0 else None,
        "min_samples_leaf": int(rng.integers(2, 20)),
        "categorical_features": features,
        "early_stopping": False,
        "random_state": case,
    }
    y = target(rng, train)
    kind = case % 3
    if kind == 0:
        classes = 2 + case % 4
        labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
        model: object = HistGradientBoostingClassifier(**params).fit(train, labels)
    else:
        loss = LOSSES[case % len(LOSSES)]
        y = np.exp(y) if loss in ("gamma", "poisson") else y
        extra = {"quantile": 0.3} if loss == "quantile" else {}
        model = HistGradientBoostingRegressor(loss=loss, **extra, **params).fit(train, y)
    score = frame(rng, 2500, numeric, categorical, scoring=True)
    return model, train, score, rng


@pytest.mark.parametrize("case", range(CASES))
def test_drawn_model_scores_bit_for_bit(case: int) -> None:
    model, train, score, _ = draw_model(case)
    fast = accelerate(model, list(train.columns))
    assert isinstance(fast, CompiledTrees), f"case {case} was not compiled"
    with threadpool_limits(limits=1):  # one thread each side; threads are the next test's
        if hasattr(model, "predict_proba"):
            assert np.array_equal(fast.predict_proba(score), model.predict_proba(score))
        assert np.array_equal(fast.predict(score), model.predict(score))
        assert np.array_equal(fast.raw_predict(fast._matrix(score)), model._raw_predict(score))
    assert not fast._fallback


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_threads_one_to_four_score_the_same_bits(threads: int) -> None:
    model, train, _, _ = draw_model(3)  # a multiclass model with categorical features
    score = frame(np.random.default_rng(threads), threads * MIN_ROWS_PER_THREAD + 17, 4, 2, scoring=True)[train.columns]
    fast = accelerate(model, list(train.columns))
    with threadpool_limits(limits=threads):
        assert fast._threads() == threads
        assert np.array_equal(fast.predict_proba(score), model.predict_proba(score))


def test_the_draws_cover_what_they_claim() -> None:
    """The cases include wide trees (past 64 leaves), categorical splits, and both kernels."""
    kinds = set()
    for case in range(CASES):
        model, train, _, _ = draw_model(case)
        fast = accelerate(model, list(train.columns))
        assert isinstance(fast, CompiledTrees)
        kinds.add(("words", fast.tables.words))
        kinds.add(("dtype", fast.tables.tables.dtype.name))
        kinds.add(("categorical", bool(len(fast.tables.categorical))))
    assert {("words", 1), ("dtype", "uint32"), ("dtype", "uint64"), ("categorical", True)} <= kinds
    assert any(k == "words" and v > 1 for k, v in kinds)
