"""A streaming summary of a run's scores, recorded with the run (and shown in the UI).

Exact count, mean, min, max and label counts; the 10th/50th/90th percentiles come from a
fixed-size uniform sample, so memory stays constant whatever the window's size. Each
slice summarises its own scores; :func:`merge` combines the slices' partial summaries
(exact for the counts and moments, a count-weighted sample for the percentiles).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARTIAL_SAMPLE = 2_000


class ScoreSummary:
    """Fed batch by batch with ``score`` and ``label`` columns; ``as_dict`` gives the JSON record."""

    def __init__(self, sample_size: int = 100_000, seed: int = 0) -> None:
        self._sample = np.empty(sample_size, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self.count = 0
        self._sum = 0.0
        self._min = np.inf
        self._max = -np.inf
        self.labels: Counter[str] = Counter()

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        labels = pc.value_counts(batch.column("label"))
        for item in labels.to_pylist():
            self.labels["null" if item["values"] is None else item["values"]] += item["counts"]
        scores = pc.drop_null(batch.column("score")).to_numpy(zero_copy_only=False)
        if not len(scores):
            return
        self._sum += float(scores.sum())
        self._min = min(self._min, float(scores.min()))
        self._max = max(self._max, float(scores.max()))
        size = len(self._sample)
        filled = min(self.count, size)
        take = min(size - filled, len(scores))
        self._sample[filled : filled + take] = scores[:take]
        rest = scores[take:]
        if len(rest):  # reservoir sampling: the i-th value overall replaces a slot with probability size / i
            seen = self.count + take + np.arange(1, len(rest) + 1)
            slots = (self._rng.random(len(rest)) * seen).astype(np.int64)
            keep = slots < size
            self._sample[slots[keep]] = rest[keep]
        self.count += len(scores)

    def partial(self, sample_size: int = PARTIAL_SAMPLE) -> dict[str, Any]:
        """A small, mergeable summary (for XCom): exact counts and moments, a uniform sample of the scores."""
        sample = self._sample[: min(self.count, len(self._sample))]
        if len(sample) > sample_size:
            sample = self._rng.choice(sample, sample_size, replace=False)
        return {
            "count": self.count,
            "sum": self._sum,
            "min": self._min if self.count else None,
            "max": self._max if self.count else None,
            "labels": dict(self.labels),
            "sample": [float(v) for v in sample],
        }

    def as_dict(self) -> dict[str, object]:
        sample = self._sample[: min(self.count, len(self._sample))]
        quantiles = np.quantile(sample, [0.1, 0.5, 0.9]).tolist() if len(sample) else [None, None, None]
        return {
            "count": self.count,
            "mean": self._sum / self.count if self.count else None,
            "min": self._min if self.count else None,
            "max": self._max if self.count else None,
            "p10": quantiles[0],
            "p50": quantiles[1],
            "p90": quantiles[2],
            "quantiles_from": len(sample),
            "labels": dict(self.labels.most_common(50)),
        }


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    positions = np.searchsorted(cumulative, np.asarray(qs) * cumulative[-1], side="left")
    return [float(values[min(p, len(values) - 1)]) for p in positions]


def merge(partials: Sequence[dict[str, Any]]) -> dict[str, object]:
    """One summary from the slices' :meth:`ScoreSummary.partial` dicts (what the run record holds).

    Each slice's sample stands for its own count, so a slice with ten times the rows weighs
    ten times as much in the percentiles.
    """
    count = sum(int(p["count"]) for p in partials)
    labels: Counter[str] = Counter()
    for p in partials:
        labels.update(p["labels"])
    with_rows = [p for p in partials if p["count"] and p["sample"]]
    quantiles: list[float | None] = [None, None, None]
    sampled = 0
    histogram: dict[str, list[float]] | None = None
    if with_rows:
        values = np.concatenate([np.asarray(p["sample"], dtype=np.float64) for p in with_rows])
        weights = np.concatenate([np.full(len(p["sample"]), p["count"] / len(p["sample"])) for p in with_rows])
        quantiles = list(_weighted_quantiles(values, weights, (0.1, 0.5, 0.9)))
        sampled = len(values)
        low = min(float(p["min"]) for p in with_rows)
        high = max(float(p["max"]) for p in with_rows)
        histogram = _histogram(values, weights, low, high)
    return {
        "count": count,
        "mean": sum(float(p["sum"]) for p in partials) / count if count else None,
        "min": min((p["min"] for p in partials if p["min"] is not None), default=None),
        "max": max((p["max"] for p in partials if p["max"] is not None), default=None),
        "p10": quantiles[0],
        "p50": quantiles[1],
        "p90": quantiles[2],
        "quantiles_from": sampled,
        "labels": dict(labels.most_common(50)),
        "histogram": histogram,
    }


HISTOGRAM_BINS = 20


def _histogram(values: np.ndarray, weights: np.ndarray, low: float, high: float) -> dict[str, list[float]]:
    """The score distribution as ``HISTOGRAM_BINS`` equal-width bins from the exact min to max (for the UI's charts).

    ``counts`` are estimated rows per bin (the weighted sample), so they sum to about the run's count.
    """
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high), weights=weights)
    return {"edges": [float(e) for e in edges], "counts": [round(float(c)) for c in counts]}
