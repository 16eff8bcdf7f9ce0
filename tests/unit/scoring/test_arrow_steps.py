"""A Pipeline's steps computed from Arrow give scikit-learn's numbers bit for bit, or are left to scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, KBinsDiscretizer, OneHotEncoder, OrdinalEncoder, StandardScaler

from batchscore.models.registry import FeatureSpec
from batchscore.scoring.compiled_trees import CompiledTrees, accelerate
from batchscore.scoring.features import ArrowRows, to_model_frame

NUMBERS = ["n0", "n1", "n2", "n3"]
TEXTS = ["t0", "t1"]
SPECS = tuple(FeatureSpec(n, "numeric") for n in NUMBERS) + tuple(FeatureSpec(t, "categorical") for t in TEXTS)
KINDS = {s.name: s.kind for s in SPECS}
TRAINED = ["a", "b", "c", "d", "e"]


def batch(rows: int, seed: int, unseen: bool) -> pa.Table:
    """Numbers with NULLs, text with NULLs and (when ``unseen``) categories never trained on."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    for name in NUMBERS:
        x = rng.normal(size=rows)
        columns[name] = pa.array(x, mask=rng.random(rows) < 0.1)
    pool = np.array([*TRAINED, "zz", "new"] if unseen else TRAINED, dtype=object)
    for name in TEXTS:
        columns[name] = pa.array(rng.choice(pool, rows).tolist(), pa.string(), mask=rng.random(rows) < 0.15)
    return pa.table(columns)


def text_steps(rng: np.random.Generator) -> Any:
    impute = [
        [],
        [SimpleImputer(strategy="constant", fill_value="missing")],
        [SimpleImputer(strategy="most_frequent")],
    ][rng.integers(3)]
    if rng.random() < 0.6:
        encoder: Any = OneHotEncoder(
            handle_unknown=str(rng.choice(["ignore", "infrequent_if_exist", "warn"])),
            sparse_output=bool(rng.integers(2)),
            dtype=[np.float64, np.float32, np.int8][rng.integers(3)],
        )
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=[-1, np.nan, 99][rng.integers(3)])
    return make_pipeline(*impute, encoder)


def number_steps(rng: np.random.Generator) -> Any:
    choice = rng.integers(5)
    if choice == 0:
        return "passthrough"
    strategy = str(rng.choice(["mean", "median", "most_frequent", "constant"]))
    impute = SimpleImputer(strategy=strategy, fill_value=-7.5 if strategy == "constant" else None)
    if choice == 1:
        return impute
    if choice == 2:
        return StandardScaler(with_mean=bool(rng.integers(2)))
    return make_pipeline(impute, StandardScaler())


def drawn_pipeline(seed: int) -> tuple[Any, str]:
    rng = np.random.default_rng(seed)
    split = int(rng.integers(1, len(NUMBERS)))
    transformers = [
        ("first", number_steps(rng), NUMBERS[:split]),
        ("texts", text_steps(rng), list(TEXTS)),
    ]
    if rng.random() < 0.5:
        transformers.append(("dropped", "drop", NUMBERS[split : split + 1]))
    remainder = str(rng.choice(["passthrough", "drop"]))
    prep = ColumnTransformer(transformers, remainder=remainder, sparse_threshold=float(rng.choice([0.0, 0.3, 1.0])))
    task = str(rng.choice(["binary", "multiclass", "regressor"]))
    trees = (
        HistGradientBoostingRegressor(max_iter=15, random_state=seed)
        if task == "regressor"
        else HistGradientBoostingClassifier(max_iter=15, max_leaf_nodes=int(rng.integers(4, 40)), random_state=seed)
    )
    return make_pipeline(prep, trees), task


def fitted(model: Any, task: str, seed: int) -> Any:
    train = batch(3000, seed, unseen=False)
    frame = to_model_frame(train, SPECS)
    signal = np.nan_to_num(frame["n0"].to_numpy()) + (frame["t0"] == "a").to_numpy() - (frame["t1"] == "c").to_numpy()
    y: Any = signal if task == "regressor" else (signal > 0.3 if task == "binary" else np.digitize(signal, [-0.5, 0.5]))
    return model.fit(frame, y)


@pytest.mark.parametrize("seed", range(16))
def test_drawn_pipeline_scores_bit_for_bit_from_arrow(seed: int) -> None:
    model, task = drawn_pipeline(seed)
    fitted(model, task, seed)
    fast = accelerate(model, [s.name for s in SPECS], KINDS)
    assert isinstance(fast, CompiledTrees)
    assert fast.reads_arrow, model
    table = batch(2500, seed + 100, unseen=True)
    frame = to_model_frame(table, SPECS)
    expected = np.asarray(model[:-1].transform(frame))
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    assert np.array_equal(fast._steps.matrix(table), expected.astype(np.float64), equal_nan=True)
    method = "predict" if task == "regressor" else "predict_proba"
    assert np.array_equal(getattr(fast, method)(ArrowRows(table, SPECS)), getattr(model, method)(frame))
    assert not fast._fallback


def simple_pipeline(*, text: Any = None, numbers: Any = "passthrough") -> Any:
    text = text if text is not None else OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    prep = ColumnTransformer([("n", numbers, NUMBERS), ("t", text, TEXTS)])
    return fitted(make_pipeline(prep, HistGradientBoostingClassifier(max_iter=10, random_state=0)), "binary", 1)


def test_an_unknown_category_under_handle_unknown_error_raises_scikit_learns_error() -> None:
    model = simple_pipeline(text=OneHotEncoder(handle_unknown="error", sparse_output=False))
    fast = accelerate(model, [s.name for s in SPECS], KINDS)
    assert fast.reads_arrow
    known = batch(300, 5, unseen=False)
    known = known.filter(np.all([known.column(t).is_valid().to_numpy(zero_copy_only=False) for t in TEXTS], axis=0))
    assert np.array_equal(
        fast.predict_proba(ArrowRows(known, SPECS)), model.predict_proba(to_model_frame(known, SPECS))
    )
    with pytest.raises(ValueError, match="unknown categories"):
        fast.predict_proba(ArrowRows(batch(300, 6, unseen=True), SPECS))


def test_infinity_into_an_imputer_raises_scikit_learns_error() -> None:
    model = simple_pipeline(numbers=SimpleImputer(strategy="median"))
    fast = accelerate(model, [s.name for s in SPECS], KINDS)
    assert fast.reads_arrow
    table = batch(200, 7, unseen=True)
    table = table.set_column(0, "n0", pa.array([np.inf] + [0.5] * 199))
    with pytest.raises(ValueError, match="infinity"):
        fast.predict_proba(ArrowRows(table, SPECS))


def test_infinity_passed_through_reaches_the_trees_as_scikit_learn_gives_it() -> None:
    model = simple_pipeline()
    fast = accelerate(model, [s.name for s in SPECS], KINDS)
    table = batch(200, 8, unseen=True).set_column(0, "n0", pa.array([np.inf, -np.inf] + [0.5] * 198))
    assert np.array_equal(
        fast.predict_proba(ArrowRows(table, SPECS)), model.predict_proba(to_model_frame(table, SPECS))
    )


@pytest.mark.parametrize(
    "shape",
    [
        "log of the numbers",
        "one-hot dropping the first category",
        "one-hot grouping infrequent categories",
        "binned numbers",
        "pandas output",
        "an imputer with an indicator",
    ],
)
def test_steps_it_does_not_reproduce_are_left_to_scikit_learn(shape: str) -> None:
    numbers: Any = "passthrough"
    text: Any = None
    if shape == "log of the numbers":
        numbers = FunctionTransformer(np.abs)
    elif shape == "one-hot dropping the first category":
        text = OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False)
    elif shape == "one-hot grouping infrequent categories":
        text = OneHotEncoder(min_frequency=0.3, handle_unknown="infrequent_if_exist", sparse_output=False)
    elif shape == "binned numbers":
        numbers = make_pipeline(SimpleImputer(), KBinsDiscretizer(n_bins=4, encode="ordinal", quantile_method="linear"))
    elif shape == "an imputer with an indicator":
        numbers = SimpleImputer(add_indicator=True)
    model = simple_pipeline(text=text, numbers=numbers)
    if shape == "pandas output":
        model[0].set_output(transform="pandas")
    fast = accelerate(model, [s.name for s in SPECS], KINDS)
    assert isinstance(fast, CompiledTrees)
    assert not fast.reads_arrow
    table = batch(400, 9, unseen=True)
    rows = ArrowRows(table, SPECS)  # handed Arrow anyway, it builds the frame and lets scikit-learn transform
    assert np.array_equal(fast.predict_proba(rows), model.predict_proba(to_model_frame(table, SPECS)))


def test_arrow_rows_slice_like_a_frame() -> None:
    rows = ArrowRows(batch(10, 0, unseen=False), SPECS)
    assert len(rows[:4]) == 4
    assert len(rows[8:20]) == 2
    assert rows[2:5].frame().equals(to_model_frame(rows.table.slice(2, 3), SPECS))
