"""A slice's scored keys, kept only as far as proving one row per key needs: a byte per key for integer keys.

The engine proves that a slice holds each entity key once by looking at every key it scored.
Keeping the keys themselves costs 8 bytes a row for integer keys, and sorting them at the end a
second copy: 160 MB of a 10M-row run's peak, the only part of it that grew with the window.
Integer keys are usually dense within a slice (a slice is a range of keys), so here each key
sets one byte of a map over the range the keys cover, and a key whose byte is already set is a
duplicate: 5 MB for a 5M-key slice, whatever the number of batches. Each batch's keys are made
unique first (``np.unique``, which also finds a batch's own duplicates), so the work is the sort
the old check did, a batch at a time.

When the keys span more than :data:`MAX_SPAN` values (sparse or hashed ids), when they are not
integers, or when one is NULL, the keys are kept as before and counted at the end: the map's
distinct keys and duplicates are turned back into keys first, so nothing seen is lost.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_SPAN = 1 << 26  # bytes of the map (64 MB) before the keys are kept instead
_INT64_MIN = -(1 << 63)


def _mapped(key_type: pa.DataType) -> bool:
    """Integer types whose every value is an int64 (uint64 is not)."""
    return pa.types.is_integer(key_type) and key_type != pa.uint64()


class ScoredKeys:
    """The keys one slice scored: whether one occurs twice, and which do."""

    def __init__(self, max_span: int = MAX_SPAN) -> None:
        self._max_span = max_span
        self._type: pa.DataType | None = None
        self._lo = 0
        self._seen: np.ndarray | None = None  # one byte per key in [lo, lo + len(seen))
        self._duplicates: list[np.ndarray] = []
        self._kept: list[pa.Array] | None = None  # the keys themselves, once the map does not serve

    @property
    def mapped(self) -> bool:
        """True while the keys are counted in the byte map (False: kept, or none seen yet)."""
        return self._kept is None and self._seen is not None

    @property
    def held_bytes(self) -> int:
        """What the check holds now: the map's bytes, or the kept keys' and duplicates'."""
        if self._kept is not None:
            return sum(k.nbytes for k in self._kept)
        return (len(self._seen) if self._seen is not None else 0) + sum(d.nbytes for d in self._duplicates)

    def add(self, keys: pa.Array | pa.ChunkedArray) -> None:
        """Count one batch's scored keys."""
        for chunk in keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]:
            if len(chunk):
                self._add(chunk)

    def _add(self, chunk: pa.Array) -> None:
        self._type = self._type or chunk.type
        if self._kept is None and _mapped(chunk.type) and not chunk.null_count:
            unique, counts = np.unique(chunk.to_numpy().astype(np.int64, copy=False), return_counts=True)
            if self._cover(int(unique[0]), int(unique[-1])):
                seen = self._seen
                assert seen is not None
                offsets = unique - self._lo
                self._duplicates += [unique[counts > 1], unique[seen[offsets] == 1]]
                seen[offsets] = 1
                return
        self._keeping().append(chunk)

    def _cover(self, first: int, last: int) -> bool:
        """Grow the map to cover [first, last]; False when that would take more than ``max_span`` bytes."""
        if self._seen is None:
            if last - first + 1 > self._max_span:
                return False
            self._lo, self._seen = first, np.zeros(last - first + 1, dtype=np.uint8)
            return True
        lo, hi = self._lo, self._lo + len(self._seen)
        if first >= lo and last < hi:
            return True
        need_lo, need_hi = min(first, lo), max(last + 1, hi)
        if need_hi - need_lo > self._max_span:
            return False
        # Headroom as large as the growth: ordered keys re-grow it every other batch, scattered ones rarely.
        size = min(2 * (need_hi - need_lo) - len(self._seen), self._max_span)
        # Headroom on the side the keys went: up from lo, or down from the top.
        new_lo = lo if first >= lo else max(need_hi - size, _INT64_MIN)
        grown = np.zeros(size, dtype=np.uint8)
        grown[lo - new_lo : hi - new_lo] = self._seen
        self._lo, self._seen = new_lo, grown
        return True

    def _keeping(self) -> list[pa.Array]:
        """The kept keys; on the switch from the map, the keys it saw (each once) and each duplicate again."""
        if self._kept is None:
            self._kept = []
            if self._seen is not None:
                distinct = np.flatnonzero(self._seen).astype(np.int64) + self._lo
                self._kept += [pa.array(v).cast(self._type) for v in (distinct, *self._duplicates) if len(v)]
                self._seen, self._duplicates = None, []
        return self._kept

    def duplicates(self) -> pa.Array:
        """The keys scored more than once (each once), in the keys' own type."""
        key_type = self._type or pa.int64()
        if self._kept is not None:
            if not self._kept:
                return pa.array([], type=key_type)
            counted = pc.value_counts(pa.chunked_array(self._kept, type=key_type))
            return counted.field("values").filter(pc.greater(counted.field("counts"), 1))
        found = np.unique(np.concatenate(self._duplicates)) if self._duplicates else np.empty(0, np.int64)
        return pa.array(found).cast(key_type)

    def has_duplicates(self) -> bool:
        """True when a key occurs twice among the slice's scored keys (the engine's proof of one row per key)."""
        if self._kept is None:
            return any(len(d) for d in self._duplicates)
        return len(self.duplicates()) > 0
