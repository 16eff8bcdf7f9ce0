"""The slice's key check: the byte map finds exactly the duplicates counting every key finds, in bounded memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batchscore.sink.scored_keys import ScoredKeys


def counted_duplicates(batches: list[pa.Array]) -> list:
    """The reference: every key kept and counted (what the check did before)."""
    if not batches:
        return []
    counted = pc.value_counts(pa.chunked_array(batches))
    return sorted(counted.field("values").filter(pc.greater(counted.field("counts"), 1)).to_pylist())


def check(batches: list[pa.Array], **options: int) -> ScoredKeys:
    keys = ScoredKeys(**options)
    for batch in batches:
        keys.add(batch)
    expected = counted_duplicates(batches)
    assert sorted(keys.duplicates().to_pylist()) == expected
    assert keys.has_duplicates() is bool(expected)
    if batches:
        assert keys.duplicates().type == batches[0].type
    return keys


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
@pytest.mark.parametrize("duplicated", [0, 1, 50])
def test_dense_keys_in_any_order_with_duplicates_within_and_across_batches(order: str, duplicated: int) -> None:
    rng = np.random.default_rng(7)
    values = np.arange(1_000, 101_000, dtype=np.int64)
    if duplicated:
        values = np.concatenate([values, rng.choice(values, duplicated, replace=False)])
    if order == "descending":
        values = values[::-1].copy()
    elif order == "shuffled":
        rng.shuffle(values)
    batches = [pa.array(values[i : i + 7_000]) for i in range(0, len(values), 7_000)]
    keys = check(batches)
    assert keys.mapped
    assert keys.held_bytes <= 1.5 * 100_000 + 8 * duplicated * 2, "a byte per key of the range, not 8 bytes a key"


def test_a_key_three_times_is_one_duplicate_and_int32_keys_stay_int32() -> None:
    batches = [pa.array([5, 6, 5], pa.int32()), pa.array([5, 7], pa.int32()), pa.array([6], pa.int32())]
    keys = check(batches)
    assert keys.duplicates().to_pylist() == [5, 6]


def test_keys_too_sparse_for_the_map_are_kept_and_nothing_seen_before_is_lost() -> None:
    batches = [pa.array([10, 11, 12, 11]), pa.array([13, 10]), pa.array([10**12, 13]), pa.array([10**12 + 5, 12])]
    keys = check(batches, max_span=1_000)
    assert not keys.mapped


def test_text_nullable_and_uint64_keys_are_counted_as_before() -> None:
    check([pa.array(["a", "b"]), pa.array(["b", "c", "c"])])
    check([pa.array([1, 2]), pa.array([None, 3, 2])])
    check([pa.array([2**64 - 1, 1], pa.uint64()), pa.array([2**64 - 1], pa.uint64())])


def test_extreme_and_negative_keys() -> None:
    low = -(2**63)
    check([pa.array([low + 5, low + 1]), pa.array([low + 1, low])])
    check([pa.array([2**63 - 1, 2**63 - 3]), pa.array([2**63 - 3])])
    check([pa.array([-5, 3]), pa.array([-10, -5, 0])])


def test_no_keys_and_empty_batches() -> None:
    keys = ScoredKeys()
    keys.add(pa.array([], pa.int64()))
    assert not keys.has_duplicates()
    assert keys.duplicates().to_pylist() == []
