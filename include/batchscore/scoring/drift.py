"""Drift: how far a window's features and scores moved from the model's training reference (PSI).

At registration, a reference sample (the training data, or a window of the source) is cut
into bins per feature: deciles for numbers, the commonest categories for categories, and a
bin for missing values. The model's own output on that sample is binned the same way
(``(score)``: the score's deciles, or a clusterer's labels). The bins and the reference's
fraction in each are stored in the model's manifest.

Each scoring thread counts its batches into those bins (a few vectorised passes per
column; no row is kept), each slice returns its counts (small, for XCom), and publish adds
them up and computes the population stability index per column:
``PSI = sum((observed - reference) * ln(observed / reference))`` over the bins, with both
fractions floored at ``EPSILON`` so an empty bin counts as rare rather than infinite. By
the usual reading, below 0.1 is stable, 0.1-0.25 a moderate shift, above 0.25 a large one.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from batchscore.models.manifest import FeatureSpec

SCORE = "(score)"  # the model output's row in the drift table (not a valid feature name)
NULL_BIN = "(null)"
OTHER_BIN = "(other)"
EPSILON = 1e-4
DECILES = tuple(i / 10 for i in range(1, 10))
MAX_CATEGORIES = 30  # the commonest reference categories get a bin each; the rest share (other)


@dataclass(frozen=True)
class Bins:
    """One column's bins and the reference's fraction in each (labels and fractions in the same order).

    ``edges`` (numbers): bin i holds values in ``(edges[i-1], edges[i]]``, the first bin
    everything up to ``edges[0]``, the last everything above ``edges[-1]``; then the
    missing-value bin. ``categories``: one bin each, then ``(other)`` and ``(null)``.
    """

    column: str
    kind: Literal["numeric", "categorical", "score"]
    reference: tuple[float, ...]
    edges: tuple[float, ...] | None = None
    categories: tuple[str, ...] | None = None

    @property
    def labels(self) -> list[str]:
        if self.categories is not None:
            return [*self.categories, OTHER_BIN, NULL_BIN]
        edges = self.edges or ()
        if not edges:
            return ["all values", NULL_BIN]
        inner = [f"({low:.4g}, {high:.4g}]" for low, high in itertools.pairwise(edges)]
        return [f"≤ {edges[0]:.4g}", *inner, f"> {edges[-1]:.4g}", NULL_BIN]

    def count(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Rows of ``column`` per bin (int64, ``len(labels)`` long)."""
        if self.categories is not None:
            return self._count_categories(column)
        if column.type != pa.float64():
            column = pc.cast(column, pa.float64())
        values = column.to_numpy(zero_copy_only=False)  # NULL becomes NaN
        # One vectorised comparison per edge (NaN is never <=): 8x faster than searchsorted + bincount
        # (0.4 ms per 100k values and 9 edges), which matters at 10M rows x 20 features.
        nulls = int(np.count_nonzero(np.isnan(values)))
        at_most = [int(np.count_nonzero(values <= edge)) for edge in self.edges or ()]
        cumulative = np.asarray([0, *at_most, len(values) - nulls], dtype=np.int64)
        return np.append(np.diff(cumulative), nulls).astype(np.int64)

    def _count_categories(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        categories = self.categories or ()
        counts = np.zeros(len(categories) + 2, dtype=np.int64)
        position = {c: i for i, c in enumerate(categories)}
        nulls = column.null_count
        for item in pc.value_counts(pc.drop_null(column).cast(pa.string())).to_pylist():
            counts[position.get(item["values"], len(categories))] += item["counts"]
        counts[-1] = nulls
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bins:
        return cls(
            column=data["column"],
            kind=data["kind"],
            reference=tuple(data["reference"]),
            edges=tuple(data["edges"]) if "edges" in data else None,
            categories=tuple(data["categories"]) if "categories" in data else None,
        )


def fractions(counts: np.ndarray) -> tuple[float, ...]:
    """Each bin's share of the counted rows (all 0 when nothing was counted)."""
    total = counts.sum()
    return tuple(float(c) / total if total else 0.0 for c in counts)


def numeric_bins(column: str, values: pa.Array | pa.ChunkedArray, kind: Literal["numeric", "score"]) -> Bins:
    """Decile bins of ``values`` (NULL and NaN are the missing bin)."""
    numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    present = numbers[~np.isnan(numbers)]
    edges = tuple(float(e) for e in np.unique(np.quantile(present, DECILES))) if len(present) else ()
    bins = Bins(column, kind, (), edges=edges)
    return Bins(column, kind, fractions(bins.count(values)), edges=edges)


def categorical_bins(
    column: str, values: pa.Array | pa.ChunkedArray, kind: Literal["categorical", "score"], known: Sequence[str] = ()
) -> Bins:
    """A bin per category: the commonest reference categories, and every one the model was fitted on."""
    counted = pc.value_counts(pc.drop_null(values).cast(pa.string())).to_pylist()
    commonest = [i["values"] for i in sorted(counted, key=lambda i: (-i["counts"], i["values"]))]
    categories = tuple(dict.fromkeys([*sorted(known), *commonest[:MAX_CATEGORIES]]))
    bins = Bins(column, kind, (), categories=categories)
    return Bins(column, kind, fractions(bins.count(values)), categories=categories)


@dataclass(frozen=True)
class Reference:
    """A model's drift reference: the bins of each feature and of its output, from ``rows`` reference rows."""

    rows: int
    source: str
    bins: tuple[Bins, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "source": self.source, "bins": [b.to_dict() for b in self.bins]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        return cls(int(data["rows"]), str(data["source"]), tuple(Bins.from_dict(b) for b in data["bins"]))


def build_reference(
    table: pa.Table,
    features: Iterable[Any],
    *,
    scores: np.ndarray | None,
    labels: pa.Array | None,
    source: str,
) -> Reference:
    """The reference of ``table`` (one column per feature, as the model saw them) and the model's output on it.

    ``features`` are the model's :class:`~batchscore.models.manifest.FeatureSpec` s; ``scores`` its
    score per row (classifiers, regressors) or ``labels`` (clusterers).
    """
    bins = []
    for spec in features:
        column = table.column(spec.name)
        if spec.kind == "numeric":
            bins.append(numeric_bins(spec.name, column, "numeric"))
        else:
            bins.append(categorical_bins(spec.name, column, "categorical", spec.categories))
    if scores is not None:
        bins.append(numeric_bins(SCORE, pa.array(scores, pa.float64()), "score"))
    elif labels is not None:
        bins.append(categorical_bins(SCORE, labels, "score"))
    return Reference(table.num_rows, source, tuple(bins))


class DriftCounter:
    """Counts a slice's scored rows into the reference's bins; shared by the slice's scoring threads."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self._counts = {b.column: np.zeros(len(b.labels), dtype=np.int64) for b in reference.bins}
        self._lock = threading.Lock()

    def add(self, features: pa.Table, scores: pa.Table) -> None:
        """Count one batch: ``features`` the rows the model scored, ``scores`` its output (``score``, ``label``)."""
        counted = {}
        for bins in self.reference.bins:
            if bins.column == SCORE:
                column = scores.column("label" if bins.categories is not None else "score")
            else:
                column = features.column(bins.column)
            counted[bins.column] = bins.count(column)
        with self._lock:
            for name, counts in counted.items():
                self._counts[name] += counts

    def subtract(self, features: pa.Table) -> None:
        """Take rows counted by :meth:`add` out of the feature counts (duplicated keys the load removed)."""
        for bins in self.reference.bins:
            if bins.column != SCORE and features.num_rows:
                counts = bins.count(features.column(bins.column))
                with self._lock:
                    self._counts[bins.column] -= counts

    def recount_scores(self, stored: Iterator[pa.RecordBatch]) -> None:
        """Count the model's output again from what the slice holds (``score``, ``label`` batches)."""
        for bins in self.reference.bins:
            if bins.column == SCORE:
                counts = np.zeros(len(bins.labels), dtype=np.int64)
                for batch in stored:
                    counts += bins.count(batch.column("label" if bins.categories is not None else "score"))
                with self._lock:
                    self._counts[SCORE] = counts

    def partial(self) -> dict[str, list[int]]:
        """The counts per column (JSON, for the slice's result)."""
        with self._lock:
            return {name: counts.tolist() for name, counts in self._counts.items()}


def psi(observed: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (fractions; each floored at EPSILON)."""
    total = 0.0
    for seen, expected in zip(observed, reference, strict=True):
        o, r = max(seen, EPSILON), max(expected, EPSILON)
        total += (o - r) * math.log(o / r)
    return total


@dataclass(frozen=True)
class ColumnDrift:
    """One row of ``scoring.drift``."""

    column: str
    kind: str
    psi: float
    threshold: float
    drifted: bool
    labels: list[str]
    reference: list[float]
    observed: list[float]

    def bins_json(self) -> dict[str, list[Any]]:
        return {"labels": self.labels, "reference": self.reference, "observed": self.observed}


@dataclass(frozen=True)
class DriftReport:
    """A run's drift: per column, and the verdict under the pipeline's policy."""

    columns: tuple[ColumnDrift, ...]
    rows: int
    status: Literal["ok", "warn", "held", "few_rows"]

    @property
    def max_psi(self) -> float | None:
        return max((c.psi for c in self.columns), default=None)

    @property
    def drifted(self) -> list[ColumnDrift]:
        return sorted((c for c in self.columns if c.drifted), key=lambda c: -c.psi)

    def describe(self) -> str:
        """The drifted columns with their PSI, largest first (for logs and the one-line error)."""
        return ", ".join(f"{c.column} PSI {c.psi:.3f} > {c.threshold:g}" for c in self.drifted)


def evaluate(
    reference: Reference,
    partials: Sequence[Mapping[str, Sequence[int]]],
    *,
    threshold: float,
    score_threshold: float,
    policy: Literal["warn", "hold"],
    min_rows: int,
) -> DriftReport:
    """Add up the slices' counts and compare each column with the reference.

    Below ``min_rows`` scored rows the PSI values are recorded but nothing is judged
    (``few_rows``): a handful of rows moves any distribution.
    """
    columns = []
    rows = 0
    for bins in reference.bins:
        counts = np.zeros(len(bins.labels), dtype=np.int64)
        for partial in partials:
            if bins.column in partial:
                counts += np.asarray(partial[bins.column], dtype=np.int64)
        rows = max(rows, int(counts.sum()))
        observed = list(fractions(counts))
        value = psi(observed, bins.reference)
        limit = score_threshold if bins.column == SCORE else threshold
        columns.append(
            ColumnDrift(
                bins.column, bins.kind, value, limit, value > limit, bins.labels, list(bins.reference), observed
            )
        )
    if rows < min_rows:
        columns = [replace(c, drifted=False) for c in columns]
        return DriftReport(tuple(columns), rows, "few_rows")
    drifted = any(c.drifted for c in columns)
    status: Literal["ok", "warn", "held"] = ("held" if policy == "hold" else "warn") if drifted else "ok"
    return DriftReport(tuple(columns), rows, status)


def drift_reference(
    estimator: Any,
    features: tuple[FeatureSpec, ...],
    table: pa.Table,
    *,
    source: str,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """The drift reference of ``table`` and the estimator's output on it, as a manifest stores it.

    ``table`` is already :func:`batchscore.models.intake.reference_frame` (the model's feature
    columns in the types the model sees). Model intake and training both build it here.
    """
    from batchscore.models.manifest import ModelManifest, classes_of, task_of
    from batchscore.scoring.features import to_model_frame
    from batchscore.scoring.predict import score_frame

    task = task_of(estimator)
    classes, positive_class = classes_of(estimator, task, positive_class)
    provisional = ModelManifest("reference", 0, "", task, features, classes, positive_class)
    scores, labels = score_frame(estimator, provisional, to_model_frame(table, features))
    return build_reference(table, features, scores=scores, labels=labels, source=source).to_dict()
