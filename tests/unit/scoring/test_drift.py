"""Drift: bins, counts and PSI, checked against an independent pandas computation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from batchscore.models.manifest import FeatureSpec
from batchscore.scoring.drift import (
    NULL_BIN,
    OTHER_BIN,
    SCORE,
    DriftCounter,
    Reference,
    build_reference,
    categorical_bins,
    evaluate,
    numeric_bins,
)

FEATURES = (FeatureSpec("spend", "numeric"), FeatureSpec("plan", "categorical", categories=("basic", "gold", "pro")))


def independent_psi(observed: pd.Series, reference: pd.Series, floor: float = 1e-4) -> float:
    """PSI from two fraction series over the same bins, written out with pandas."""
    o, r = observed.clip(lower=floor), reference.clip(lower=floor)
    return float(((o - r) * np.log(o / r)).sum())


def pandas_numeric_fractions(values: pd.Series, edges: list[float]) -> pd.Series:
    """Fractions per bin by pd.cut (right-closed, open ends), then the missing share."""
    cut = pd.cut(values, [-np.inf, *edges, np.inf], right=True)
    counts = [*cut.value_counts(sort=False).to_numpy().tolist(), int(values.isna().sum())]
    return pd.Series(counts, dtype=float) / len(values)


def frame(rng: np.random.Generator, n: int, shift: float = 0.0, plans: tuple[str, ...] = ("basic", "pro")) -> pa.Table:
    spend = rng.normal(100 + shift, 20, n)
    spend[rng.random(n) < 0.05] = np.nan
    plan = rng.choice(np.array(plans, dtype=object), n)
    plan[rng.random(n) < 0.02] = None
    return pa.table({"spend": pa.array(spend, from_pandas=True), "plan": pa.array(plan, pa.string())})


def test_numeric_psi_matches_pandas() -> None:
    rng = np.random.default_rng(0)
    reference_values = frame(rng, 50_000).column("spend")
    bins = numeric_bins("spend", reference_values, "numeric")
    edges = list(bins.edges or ())
    assert len(edges) == 9
    assert len(bins.labels) == 11
    assert bins.labels[-1] == NULL_BIN
    ref_series = pd.Series(reference_values.to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(bins.reference, pandas_numeric_fractions(ref_series, edges), atol=1e-12)

    shifted = frame(rng, 20_000, shift=15.0).column("spend")
    counter = DriftCounter(Reference(50_000, "test", (bins,)))
    counter.add(pa.table({"spend": shifted}), pa.table({"score": pa.nulls(len(shifted), pa.float64())}))
    report = evaluate(
        counter.reference, [counter.partial()], threshold=0.25, score_threshold=0.25, policy="warn", min_rows=0
    )
    observed = pandas_numeric_fractions(pd.Series(shifted.to_numpy(zero_copy_only=False)), edges)
    (column,) = report.columns
    assert column.observed == pytest.approx(observed.tolist(), abs=1e-12)
    assert column.psi == pytest.approx(independent_psi(observed, pd.Series(bins.reference)), rel=1e-12)
    assert column.psi > 0.25
    assert column.drifted
    assert report.status == "warn"


def test_categorical_bins_keep_known_unseen_and_missing_apart() -> None:
    values = pa.array(["basic", "pro", "pro", None, "basic", "basic"])
    bins = categorical_bins("plan", values, "categorical", known=("gold",))
    assert bins.labels == ["gold", "basic", "pro", OTHER_BIN, NULL_BIN]
    assert bins.reference == pytest.approx((0.0, 3 / 6, 2 / 6, 0.0, 1 / 6))
    observed = bins.count(pa.array(["gold", "platinum", "platinum", None, "pro"]))
    assert observed.tolist() == [1, 0, 1, 2, 1]


def test_counts_from_threads_equal_counts_at_once() -> None:
    rng = np.random.default_rng(1)
    table = frame(rng, 30_000)
    scores = pa.table({"score": rng.random(30_000), "label": pa.nulls(30_000, pa.string())})
    reference = build_reference(table, FEATURES, scores=rng.random(1000), labels=None, source="test")
    assert [b.column for b in reference.bins] == ["spend", "plan", SCORE]
    at_once = DriftCounter(reference)
    at_once.add(table, scores)
    threaded = DriftCounter(reference)
    batches = [(table.slice(i, 1000), scores.slice(i, 1000)) for i in range(0, 30_000, 1000)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda pair: threaded.add(*pair), batches))
    assert threaded.partial() == at_once.partial()
    assert sum(at_once.partial()["plan"]) == 30_000


def test_same_distribution_is_stable_and_verdicts_follow_the_policy() -> None:
    rng = np.random.default_rng(2)
    reference = build_reference(frame(rng, 50_000), FEATURES, scores=rng.random(50_000), labels=None, source="t")
    counter = DriftCounter(reference)
    counter.add(frame(rng, 20_000), pa.table({"score": rng.random(20_000)}))
    partial = counter.partial()
    stable = evaluate(reference, [partial], threshold=0.1, score_threshold=0.1, policy="hold", min_rows=1000)
    assert stable.status == "ok"
    assert stable.max_psi is not None
    assert stable.max_psi < 0.01

    moved = DriftCounter(reference)
    moved.add(
        frame(rng, 20_000, plans=("gold", "platinum")), pa.table({"score": rng.beta(5, 1, 20_000)})
    )  # a new plan mix and scores pushed up
    held = evaluate(reference, [moved.partial()], threshold=0.25, score_threshold=5.0, policy="hold", min_rows=1000)
    assert held.status == "held"
    assert [c.column for c in held.drifted] == ["plan"]  # the score moved too, but under its own threshold
    assert held.describe().startswith("plan PSI ")
    # the score has a threshold of its own
    scored = evaluate(reference, [moved.partial()], threshold=50.0, score_threshold=0.25, policy="warn", min_rows=1)
    assert [c.column for c in scored.drifted] == [SCORE]
    assert scored.status == "warn"
    few = evaluate(reference, [moved.partial()], threshold=0.25, score_threshold=0.25, policy="hold", min_rows=50_000)
    assert few.status == "few_rows"
    assert not few.drifted
    assert few.max_psi == held.max_psi
    two_slices = evaluate(reference, [partial, partial], threshold=0.1, score_threshold=0.1, policy="hold", min_rows=1)
    assert two_slices.rows == 40_000
    assert two_slices.max_psi == pytest.approx(stable.max_psi)


def test_reference_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    reference = build_reference(
        frame(rng, 1000), FEATURES, scores=None, labels=pa.array(["0", "1"] * 500), source="clusters"
    )
    assert reference.bins[-1].categories == ("0", "1")
    assert Reference.from_dict(reference.to_dict()) == reference


def test_constant_and_empty_columns_have_bins() -> None:
    constant = numeric_bins("x", pa.array([5.0] * 10), "numeric")
    assert constant.labels[-1] == NULL_BIN
    assert sum(constant.reference) == pytest.approx(1.0)
    assert constant.count(pa.array([5.0, 6.0, None])).sum() == 3
    empty = numeric_bins("x", pa.array([None, None], pa.float64()), "numeric")
    assert empty.labels == ["all values", NULL_BIN]
    assert empty.reference == (0.0, 1.0)
