"""Slices and their sizes: chained key ranges cover every key exactly once, whatever the bounds."""

from pathlib import Path

import pytest
from psycopg import sql

from batchscore.pipeline.config import load_config
from batchscore.run.stages import MIN_BATCH_ROWS, batch_rows
from batchscore.source.slices import WHOLE, KeySlice, chain, slice_count, slice_query

CONFIG = load_config(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "churn.yaml")


def members(slices: tuple[KeySlice, ...], key: int | str | None) -> list[int]:
    """The slices whose range holds ``key``, evaluated the way the SQL predicate reads."""
    found = []
    for s in slices:
        if key is None:
            inside = s.lower is None  # slice 0 (open below) also takes the NULL keys
        else:
            inside = (s.lower is None or key >= s.lower) and (s.upper is None or key < s.upper)
        if inside:
            found.append(s.index)
    return found


@pytest.mark.parametrize("bounds", [[], [10], [10, 20, 30], ["b", "m", "x"]])
def test_chained_slices_take_every_key_exactly_once(bounds: list) -> None:
    slices = chain(bounds)
    assert len(slices) == len(bounds) + 1
    assert [s.index for s in slices] == list(range(len(slices)))
    probes = [None, *bounds] + (
        [-(10**12), 0, 9, 10, 11, 29, 30, 31, 10**12]
        if not bounds or isinstance(bounds[0], int)
        else ["", "a", "b", "c", "m", "x", "zz"]
    )
    for key in probes:
        assert len(members(slices, key)) == 1, key


def test_slice_sql_is_composed_with_quoted_identifiers_and_literals() -> None:
    first, middle, last = chain([100, "o'k"])
    column = sql.Identifier("s", 'we"ird')
    assert first.predicate(column).as_string(None) == '("s"."we""ird" < 100 OR "s"."we""ird" IS NULL)'
    assert middle.predicate(column).as_string(None) == '"s"."we""ird" >= 100 AND "s"."we""ird" < \'o\'\'k\''
    assert last.predicate(column).as_string(None) == '"s"."we""ird" >= \'o\'\'k\''
    assert WHOLE.predicate(column).as_string(None) == "TRUE"
    query = "SELECT id FROM t WHERE ts >= '2026-01-01'"
    assert slice_query(query, "id", WHOLE) == query  # one slice: the query exactly as written
    assert slice_query(query, "id", middle) == (
        f'SELECT * FROM ({query}) AS "batchscore_slice" WHERE "batchscore_slice"."id" >= 100 '
        "AND \"batchscore_slice\".\"id\" < 'o''k'"
    )


def test_slice_round_trips_through_xcom() -> None:
    for piece in chain([5, 9]):
        assert KeySlice.from_dict(piece.to_dict()) == piece


@pytest.mark.parametrize(
    ("estimate", "slice_rows", "max_slices", "expected"),
    [
        (None, 1_000, 8, 1),  # no estimate (not PostgreSQL): one slice
        (0, 1_000, 8, 1),
        (1_000, 1_000, 8, 1),  # small windows: one slice, no sampling, no extra task
        (1_001, 1_000, 8, 2),
        (10_000_000, 2_000_000, 8, 5),
        (10_000_000, 2_000_000, 2, 2),  # capped
    ],
)
def test_slice_count(estimate: int | None, slice_rows: int, max_slices: int, expected: int) -> None:
    assert slice_count(estimate, slice_rows, max_slices) == expected


@pytest.mark.parametrize(
    ("slice_rows", "workers", "expected"),
    [
        (None, 2, CONFIG.execution.batch_rows),  # no estimate
        (10_000_000, 2, CONFIG.execution.batch_rows),  # big slices: full batches
        (200_000, 2, 25_000),  # small slices: four batches per scoring thread
        (1_000, 2, MIN_BATCH_ROWS),  # never tiny batches
    ],
)
def test_batch_rows(slice_rows: int | None, workers: int, expected: int) -> None:
    assert batch_rows(CONFIG, slice_rows, workers) == expected
