"""The skops allowlist: exact types only, regenerated from the models we support; hostile files run nothing."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from batchscore.models.manifest import RegistryError
from batchscore.models.registry import _deserialise
from batchscore.models.trusted_types import ALLOWED_FUNCTIONS, ALLOWED_NODES, PARTIAL, _resolves_as_listed
from tests.hostile_models import hostile_files


def supported_models() -> dict[str, Any]:
    """One fitted model of every kind the project supports (the demo's three among them)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    from batchscore.local.demo import model as churn
    from batchscore.local.demo import segments, spend

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300), "c": rng.choice(["x", "y", "z"], 300)})
    x.loc[::7, "a"] = np.nan
    y, y3, yr = (x.b > 0).astype(int), rng.integers(0, 3, 300), x.b * 2 + 3
    num = x[["b"]].assign(a=x.a.fillna(0))
    pre = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), ["a", "b"]),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="-"), OneHotEncoder()), ["c"]),
        ]
    )
    warnings.filterwarnings("ignore")  # convergence warnings of tiny fits
    models: dict[str, Any] = {
        "churn-like pipeline": Pipeline([("pre", pre), ("m", HistGradientBoostingClassifier(max_iter=5))]).fit(x, y),
        "spend-like pipeline": Pipeline([("pre", pre), ("m", HistGradientBoostingRegressor(max_iter=5))]).fit(x, yr),
        "segments-like pipeline": make_pipeline(SimpleImputer(), StandardScaler(), KMeans(3, n_init=2)).fit(num),
        "hgb multiclass": HistGradientBoostingClassifier(max_iter=5).fit(num, y3),
        "hgb native categories": HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype").fit(
            x.assign(c=x.c.astype("category")), y
        ),
        "ordinal + scaler + logistic": Pipeline(
            [
                (
                    "pre",
                    ColumnTransformer(
                        [
                            ("o", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["c"]),
                            ("s", StandardScaler(), ["b"]),
                        ]
                    ),
                ),
                ("m", LogisticRegression()),
            ]
        ).fit(x, y),
        "linear": LinearRegression().fit(num, yr),
        "ridge": Ridge().fit(num, yr),
        "minibatch kmeans": MiniBatchKMeans(3, n_init=2).fit(num),
        "mlp adam": MLPClassifier(max_iter=20).fit(num, y),
        "mlp sgd": MLPRegressor(solver="sgd", max_iter=20).fit(num, yr),
        "random forest": RandomForestClassifier(5).fit(num, y),
        "gradient boosting": GradientBoostingClassifier(n_estimators=5).fit(num, y),
    }
    for loss in ("squared_error", "absolute_error", "gamma", "poisson", "quantile"):
        extra = {"quantile": 0.5} if loss == "quantile" else {}
        models[f"hgb {loss}"] = HistGradientBoostingRegressor(max_iter=3, loss=loss, **extra).fit(num, yr.abs() + 0.1)
    demo = _demo_frame(rng)
    models["demo churn"] = churn.build_estimator(max_iter=3).fit(demo, rng.integers(0, 2, len(demo)))
    models["demo spend"] = spend.build_estimator(max_iter=3).fit(demo, rng.gamma(2.0, size=len(demo)))
    models["demo segments"] = segments.build_estimator().fit(demo[list(segments.SEGMENT_FEATURES)])
    return models


def _demo_frame(rng: np.random.Generator) -> pd.DataFrame:
    """Rows shaped like the demo warehouse's features, with missing numbers and categories."""
    from batchscore.local.demo.warehouse import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    frame = pd.DataFrame({name: rng.normal(size=200) for name in NUMERIC_FEATURES})
    frame.iloc[::9, 0] = np.nan
    for name in CATEGORICAL_FEATURES:
        frame[name] = rng.choice(["a", "b", None], 200)
    return frame


def _untrusted_nodes(data: bytes) -> set[tuple[str, str]]:
    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(data=data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[tuple[str, str]] = set()
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = f"{item.get('__module__')}.{item.get('__class__')}"
            if "__loader__" in item and name in untrusted:
                found.add((item["__loader__"], name))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return supported_models()


def test_the_allowlist_is_exactly_what_the_supported_models_hold(models: dict[str, Any]) -> None:
    """Regenerated from fitted models: a list grown by hand (or shrunk by a library upgrade) fails here."""
    import skops.io as sio

    found: set[tuple[str, str]] = set()
    for model in models.values():
        found |= _untrusted_nodes(sio.dumps(model))
    assert found == ALLOWED_NODES | {PARTIAL}


def test_every_listed_name_resolves_to_a_class_or_function_defined_where_it_says() -> None:
    for loader, name in ALLOWED_NODES:
        assert _resolves_as_listed(loader, name), name
    for pair in ALLOWED_FUNCTIONS:
        assert not _resolves_as_listed("ObjectNode", pair[1]), "a function is never accepted as a class"
    assert not _resolves_as_listed("ObjectNode", "sklearn.utils._testing.check_output")  # subprocess's, re-exported
    assert not _resolves_as_listed("ObjectNode", "sklearn.datasets._base.Path")  # pathlib's class, re-exported


def test_every_supported_model_kind_loads_and_predicts_the_same(models: dict[str, Any]) -> None:
    import skops.io as sio

    rng = np.random.default_rng(1)
    for what, model in models.items():
        loaded = _deserialise(what, sio.dumps(model))
        columns = getattr(model, "feature_names_in_", None)
        if what.startswith("demo"):
            x = _demo_frame(rng)[list(columns)]
        elif columns is not None and "c" in columns:
            x = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "c": rng.choice(["x", "y"], 50)})
            if what == "hgb native categories":
                x["c"] = pd.Categorical(x["c"], categories=["x", "y", "z"])
        else:
            x = pd.DataFrame({"b": rng.normal(size=50), "a": rng.normal(size=50)})
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x), err_msg=what)


@pytest.mark.parametrize("way", sorted(hostile_files(Path("/nonexistent/marker"))))
def test_a_hostile_file_is_refused_naming_its_type_and_nothing_runs(way: str, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    data = hostile_files(marker)[way]
    with pytest.raises(RegistryError, match=r"outside the allowlist: ") as refused:
        _deserialise("hostile.skops", data)
    assert "\n" not in str(refused.value)
    assert way.split(maxsplit=1)[0].rsplit(".", 1)[-1] in str(refused.value), "the refusal names the type"
    assert not list(tmp_path.iterdir()), "nothing ran: no marker was created"


@pytest.mark.parametrize("way", ["utils._testing.check_output", "numpy.memmap", "datasets.dump_svmlight_file"])
def test_the_hostile_payloads_are_real(way: str, tmp_path: Path) -> None:
    """Without our check (skops told to trust what it reports), the same file does run its payload."""
    import skops.io as sio

    data = hostile_files(tmp_path / "code-ran")[way]
    with contextlib.suppress(Exception):
        sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    assert list(tmp_path.iterdir()), f"{way}: the payload should have run when trusted blindly"


def _schema_of(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return dict(json.loads(archive.read("schema.json")))


def test_a_partial_is_accepted_only_around_the_listed_function(models: dict[str, Any]) -> None:
    import skops.io as sio

    data = sio.dumps(models["hgb native categories"])
    text = (
        json.dumps(_schema_of(data))
        .replace('"check_array"', '"check_output"')
        .replace('"sklearn.utils.validation"', '"sklearn.utils._testing"')
    )
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.namelist():
            target.writestr(item, text if item == "schema.json" else source.read(item))
    with pytest.raises(RegistryError, match=r"functools\.partial \(around sklearn\.utils\._testing\.check_output\)"):
        _deserialise("partial.skops", out.getvalue())


def test_a_tree_pointing_outside_itself_is_refused_before_it_predicts(models: dict[str, Any]) -> None:
    """Allowed types with hostile contents: a child index past the tree, a feature past the inputs."""
    import skops.io as sio

    model = copy.deepcopy(models["hgb multiclass"])
    predictor = model._predictors[0][0]
    split = int(np.flatnonzero(predictor.nodes["is_leaf"] == 0)[0])
    predictor.nodes["left"][split] = 10**6
    with pytest.raises(RegistryError, match="child index points outside the tree"):
        _deserialise("tree.skops", sio.dumps(model))
    predictor.nodes["left"][split] = split  # a loop back to itself
    with pytest.raises(RegistryError, match="back to an ancestor"):
        _deserialise("tree.skops", sio.dumps(model))
    predictor.nodes["left"][split] = split + 1
    predictor.nodes["feature_idx"][split] = 99
    with pytest.raises(RegistryError, match="uses feature 99 of a model with 2 inputs"):
        _deserialise("tree.skops", sio.dumps(model))
    forest = copy.deepcopy(models["random forest"])
    forest.estimators_[0].tree_.children_left[0] = 10**6
    with pytest.raises(RegistryError, match="child index points outside the tree"):
        _deserialise("forest.skops", sio.dumps(forest))
