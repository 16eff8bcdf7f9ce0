"""The compiled tree walk gives scikit-learn's histogram gradient boosting output bit for bit, or steps aside."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from batchscore.scoring.compiled_trees import CompiledTrees, accelerate
from batchscore.scoring.tree_kernels import BLOCK
from batchscore.scoring.tree_tables import build_tables

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
    return data(2 * BLOCK + 3, seed=1)  # whole blocks and a short last one


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


def test_values_on_every_threshold_and_its_neighbours_decide_as_scikit_learn(train: pd.DataFrame) -> None:
    """The node ops compare raw values: a value equal to a split's threshold goes left, NaN the missing way.

    Every split threshold of every feature, the floats either side of it, +-inf, NaN and the
    largest magnitudes, in both layouts the kernel reads, against ``predict_proba``.
    """
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(train, target(train) > 0)
    fast = accelerate(model, COLUMNS)
    assert isinstance(fast, CompiledTrees)
    assert len(fast.tables.op_threshold) > 0  # the numeric nodes are node ops
    edges = np.unique(fast.tables.op_threshold[np.isfinite(fast.tables.op_threshold)])
    specials = [np.inf, -np.inf, np.nan, np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.0, -0.0]
    values = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), specials])
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({c: rng.permutation(np.resize(values, 3 * BLOCK + 7)) for c in COLUMNS})
    expected = model.predict_proba(frame)
    assert np.array_equal(fast.predict_proba(frame), expected)
    assert np.array_equal(
        fast._from_raw(fast.raw_predict(np.ascontiguousarray(frame.to_numpy()), 1), "predict_proba"), expected
    )
    assert np.array_equal(
        fast._from_raw(fast.raw_predict(np.asfortranarray(frame.to_numpy()), 1), "predict_proba"), expected
    )
    assert not fast._fallback


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
    for model in (
        LogisticRegression().fit(train.fillna(0), y),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(train.fillna(0), y),
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


def test_native_categorical_splits_are_compiled_too(train: pd.DataFrame) -> None:
    """``from_dtype`` categories: the model's own encoder codes them, the tables hold its bitsets."""
    y = target(train) > 0
    plan = pd.Categorical(np.where(train["c"] > 0.5, "gold", np.where(train["c"] < -0.5, "basic", None)))
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train.assign(c=plan), y)
    assert model.is_categorical_ is not None
    scored = data(300, seed=4)
    scored["c"] = pd.Series(np.where(scored["c"] > 0, "gold", "platinum"), dtype=object)  # platinum: unseen
    scored.loc[::9, "c"] = np.nan
    fast = accelerate(model, COLUMNS)
    assert isinstance(fast, CompiledTrees)
    assert np.array_equal(fast.predict_proba(scored), model.predict_proba(scored))
    assert not fast._fallback


def test_a_kernel_off_by_one_ulp_is_caught_by_the_self_check(
    train: pd.DataFrame, score: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(train, target(train))
    broken = CompiledTrees(model, COLUMNS, np.arange(len(COLUMNS)), build_tables(model))
    values = broken.tables.leaf_values
    values[:] = np.nextafter(values, np.inf)  # every leaf one ulp up: sums a hair off, leaves all right
    with caplog.at_level(logging.WARNING, logger="batchscore.scoring.compiled_trees"):
        assert np.array_equal(broken.predict(score), model.predict(score))
        assert np.array_equal(broken.predict(score), model.predict(score))
    assert broken._fallback
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


def _fresh_process(code: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.strip()


def test_a_linear_model_never_loads_numba() -> None:
    """Lean start-up: numba is imported only when a tree model is compiled."""
    code = (
        "import sys, numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from batchscore.scoring.compiled_trees import accelerate\n"
        "x = np.random.default_rng(0).normal(size=(50, 2))\n"
        "model = LogisticRegression().fit(x, x[:, 0] > 0)\n"
        "assert accelerate(model, ['a', 'b']) is model\n"
        "print('numba' in sys.modules)\n"
    )
    assert _fresh_process(code, {}) == "False"


def test_a_fresh_worker_caches_the_kernels_where_numba_cache_dir_says(tmp_path: Path) -> None:
    """A read-only install: the operator (or the fallback) points NUMBA_CACHE_DIR at a writable place."""
    code = (
        "import numpy as np, pandas as pd\n"
        "from sklearn.ensemble import HistGradientBoostingRegressor\n"
        "from batchscore.scoring.compiled_trees import accelerate, numba_cache_dir\n"
        "x = pd.DataFrame(np.random.default_rng(0).normal(size=(300, 2)), columns=['a', 'b'])\n"
        "model = HistGradientBoostingRegressor(max_iter=3).fit(x, x['a'])\n"
        "fast = accelerate(model, ['a', 'b'])\n"
        "assert np.array_equal(fast.predict(x), model.predict(x))\n"
        "print(numba_cache_dir())\n"
    )
    assert _fresh_process(code, {"NUMBA_CACHE_DIR": str(tmp_path)}) == str(tmp_path)
    assert any(p.suffix == ".nbi" for p in tmp_path.rglob("*"))  # the kernels' index, for the next process


@pytest.mark.parametrize("wide", ["1", "0"])
def test_the_vector_width_the_compiler_may_use_changes_no_bit(tmp_path: Path, wide: str) -> None:
    """512-bit vectors where the CPU has AVX-512 (the default), LLVM's 256 with BATCHSCORE_WIDE_VECTORS=0.

    Each in a fresh process, since numba reads its CPU features once: the same bits as
    ``predict_proba`` either way, NaN and +-inf included, and the setting is what was asked for.
    """
    code = (
        "import numpy as np, pandas as pd, numba\n"
        "from sklearn.ensemble import HistGradientBoostingClassifier\n"
        "from batchscore.scoring.compiled_trees import accelerate\n"
        "rng = np.random.default_rng(0)\n"
        "x = pd.DataFrame(rng.normal(size=(3000, 3)), columns=['a', 'b', 'c'])\n"
        "x.loc[::7, 'b'] = np.nan\n"
        "model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, x['a'] + x['b'].fillna(1) > 0)\n"
        "x.loc[::5, 'a'] = np.inf\n"
        "x.loc[::6, 'c'] = -np.inf\n"
        "fast = accelerate(model, ['a', 'b', 'c'])\n"
        "assert np.array_equal(fast.predict_proba(x), model.predict_proba(x)) and not fast._fallback\n"
        "print('-prefer-256-bit' in (numba.config.CPU_FEATURES or ''))\n"
    )
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "BATCHSCORE_WIDE_VECTORS": wide}
    import llvmlite.binding as llvm

    avx512 = all(llvm.get_host_cpu_features().get(f) for f in ("avx512f", "avx512bw", "avx512vl"))
    assert _fresh_process(code, env) == str(wide == "1" and avx512)


def test_a_row_major_matrix_scores_the_same_bits_a_chunk_at_a_time() -> None:
    """Row-major input is copied to column-major chunks (the node ops read columns): same bits, chunk edges included."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from batchscore.scoring import compiled_trees

    rng = np.random.default_rng(7)
    x = rng.normal(size=(3_000, 6))
    x[::13, 2] = np.nan
    y = (x[:, 0] + np.nan_to_num(x[:, 2]) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    scorer = compiled_trees.accelerate(model, [f"x{i}" for i in range(6)])
    assert isinstance(scorer, compiled_trees.CompiledTrees)
    rows = compiled_trees.ROW_MAJOR_CHUNK_ROWS + 1_234  # more than one chunk, the last one short
    big = np.ascontiguousarray(rng.normal(size=(rows, 6)))
    big[::7, 2] = np.nan
    row_major = scorer.raw_predict(big, 1)
    assert np.array_equal(row_major, scorer.raw_predict(np.asfortranarray(big), 1))
    assert np.array_equal(row_major, model._raw_predict(big))
    assert np.array_equal(scorer.raw_predict(big, 2), row_major)
