"""The run's score summary merged from its slices equals the summary of all scores at once."""

import numpy as np
import pyarrow as pa
import pytest

from batchscore.scoring.summary import ScoreSummary, merge


def summarise(scores: np.ndarray, labels: list[str]) -> ScoreSummary:
    summary = ScoreSummary()
    summary.add(pa.table({"score": scores, "label": labels}))
    return summary


def test_merged_slices_match_the_whole() -> None:
    rng = np.random.default_rng(0)
    sizes = [50_000, 5_000, 120_000]  # uneven slices: each sample weighs by its slice's count
    parts = [rng.beta(2, 5 + i, size=n) for i, n in enumerate(sizes)]
    labels = [["1" if v > 0.5 else "0" for v in p] for p in parts]
    merged = merge([summarise(p, lab).partial() for p, lab in zip(parts, labels, strict=True)])
    everything = np.concatenate(parts)
    assert merged["count"] == len(everything)
    assert merged["mean"] == pytest.approx(everything.mean(), rel=1e-12)
    assert (merged["min"], merged["max"]) == (everything.min(), everything.max())
    assert merged["labels"] == {"0": int((everything <= 0.5).sum()), "1": int((everything > 0.5).sum())}
    for name, q in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
        assert merged[name] == pytest.approx(np.quantile(everything, q), abs=0.02)


def test_empty_slices_merge_to_an_empty_summary() -> None:
    empty = ScoreSummary().partial()
    merged = merge([empty, empty])
    assert (merged["count"], merged["mean"], merged["min"], merged["p50"]) == (0, None, None, None)
    one = merge([empty, summarise(np.array([0.25]), ["0"]).partial()])
    assert (one["count"], one["mean"], one["p10"], one["p90"]) == (1, 0.25, 0.25, 0.25)


def test_histogram_estimates_the_whole_distribution() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.beta(2, 5, size=40_000), rng.beta(5, 2, size=10_000)]
    merged = merge([summarise(p, ["x"] * len(p)).partial() for p in parts])
    histogram = merged["histogram"]
    assert isinstance(histogram, dict)
    everything = np.concatenate(parts)
    edges = np.asarray(histogram["edges"])
    assert len(edges) == len(histogram["counts"]) + 1 == 21
    assert (edges[0], edges[-1]) == (everything.min(), everything.max())
    exact, _ = np.histogram(everything, bins=edges)
    assert sum(histogram["counts"]) == pytest.approx(len(everything), rel=0.01)
    # from a 4,000-value sample standing for 50,000 rows: each bin within 2% of the rows
    assert np.abs(np.asarray(histogram["counts"]) - exact).max() < 0.02 * len(everything)
    assert merge([ScoreSummary().partial()])["histogram"] is None
