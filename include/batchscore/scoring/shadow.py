"""Champion/challenger shadow scoring, its comparison: how far the challenger agrees with the champion.

The challenger scores the champion's rows in the same run (its side of a slice, which also
loads its scores, is :class:`batchscore.sink.shadow_table.Challenger`). How far the two
agree is counted as the batches go by: rows compared, labels equal, summed absolute score
difference, and both score distributions over the same bins, from which publish computes
the PSI between them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchscore.models.manifest import ModelManifest
from batchscore.scoring.drift import DECILES, SCORE, Bins, Reference, fractions, psi


def comparison_bins(champion: ModelManifest) -> Bins | None:
    """Bins to compare the two score distributions in: the champion's reference score bins, or deciles of [0, 1].

    None for a regressor without a reference (no range known in advance) and a clusterer
    without one (labels are compared row by row instead).
    """
    if champion.reference is not None:
        for bins in Reference.from_dict(champion.reference).bins:
            if bins.column == SCORE:
                return bins
    if champion.task == "classifier":
        return Bins(SCORE, "score", (), edges=DECILES)
    return None


class Agreement:
    """Counts how far champion and challenger agree, batch by batch (thread-safe)."""

    def __init__(self, bins: Bins | None) -> None:
        self.bins = bins
        self._lock = threading.Lock()
        self.rows = 0
        self.labels_equal = 0
        self.labelled = 0
        self.abs_diff = 0.0
        self.scored = 0
        size = len(bins.labels) if bins is not None else 0
        self.champion = np.zeros(size, dtype=np.int64)
        self.challenger = np.zeros(size, dtype=np.int64)

    def add(self, champion: pa.Table, challenger: pa.Table) -> None:
        """``champion`` and ``challenger``: one batch's scores (key, score, label) from each model."""
        if challenger.num_rows != champion.num_rows:  # the challenger rejected some rows: align by key
            positions = pc.index_in(challenger.column(0), value_set=champion.column(0).combine_chunks())
            champion = champion.take(positions)
        labels = pc.equal(champion.column("label"), challenger.column("label"))
        equal = int(pc.sum(labels).as_py() or 0)
        labelled = len(labels) - labels.null_count
        scores = pc.abs(pc.subtract(champion.column("score"), challenger.column("score")))
        diff = float(pc.sum(scores).as_py() or 0.0)
        scored = len(scores) - scores.null_count
        column = "label" if self.bins is not None and self.bins.categories is not None else "score"
        ours = self.bins.count(champion.column(column)) if self.bins is not None else None
        theirs = self.bins.count(challenger.column(column)) if self.bins is not None else None
        with self._lock:
            self.rows += challenger.num_rows
            self.labels_equal += equal
            self.labelled += labelled
            self.abs_diff += diff
            self.scored += scored
            if ours is not None and theirs is not None:
                self.champion += ours
                self.challenger += theirs

    def partial(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rows": self.rows,
                "labels_equal": self.labels_equal,
                "labelled": self.labelled,
                "abs_diff": self.abs_diff,
                "scored": self.scored,
                "champion": self.champion.tolist(),
                "challenger": self.challenger.tolist(),
            }


def _summed(counts: Sequence[Sequence[int]]) -> np.ndarray:
    """Bin counts of several slices added up (every slice uses the same bins)."""
    return np.sum([np.asarray(c, dtype=np.int64) for c in counts], axis=0) if counts else np.zeros(0, np.int64)


def agreement(partials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's agreement from its slices' :meth:`Agreement.partial` (what the run record's ``shadow`` holds)."""
    rows = sum(int(p["rows"]) for p in partials)
    labelled = sum(int(p["labelled"]) for p in partials)
    scored = sum(int(p["scored"]) for p in partials)
    champion = _summed([p["champion"] for p in partials])
    challenger = _summed([p["challenger"] for p in partials])
    compared = bool(len(champion) and champion.sum() and challenger.sum())
    return {
        "rows": rows,
        "label_agreement": sum(int(p["labels_equal"]) for p in partials) / labelled if labelled else None,
        "mean_abs_diff": sum(float(p["abs_diff"]) for p in partials) / scored if scored else None,
        "psi": psi(fractions(challenger), fractions(champion)) if compared else None,
    }


@dataclass(frozen=True)
class ShadowSlice:
    """Where one slice's challenger scores are (small, for XCom), with the slice's agreement counts."""

    lineage_id: int
    schema: str
    table: str
    rejects_table: str
    rows_scored: int
    rows_rejected: int
    agreement: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
