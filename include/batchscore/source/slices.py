"""Slices: the window cut into disjoint key ranges whose union is exactly the window.

Each slice is scored by its own task (in parallel, on any worker), so a slice must be
defined without changing what any row's features are: a pipeline query may aggregate
over the whole window (transactions per customer in the window), so cutting the window
into shorter time ranges would change its results. A slice is therefore a range of the
entity key applied *around* the query's result::

    SELECT * FROM (<the pipeline's query>) AS batchscore_slice WHERE <key range>

PostgreSQL pushes the range down into the query where that is safe (into the scan of a
plain query, below a ``GROUP BY`` on the key), and evaluates it on the result otherwise.

The ranges are half-open and chained: slice 0 is ``key < b1 OR key IS NULL``, slice i is
``b_i <= key < b_{i+1}``, the last is ``key >= b_n``. Every value, NULL included, falls
in exactly one slice whatever the bounds are; the bounds only decide how even the slices
are. They are sampled quantiles of the window's keys (any sortable key type: integers or
text, compared by the source database itself, so its collation decides for text), which
keeps skewed keys balanced where equal-width ranges over ``[min, max]`` would not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from psycopg import sql

from batchscore import db

log = logging.getLogger(__name__)

KeyValue = int | str
SLICE_ALIAS = "batchscore_slice"
# Keys sampled to place the bounds: enough for even slices, cheap to sort.
SAMPLE_KEYS = 200_000


@dataclass(frozen=True)
class KeySlice:
    """Rows whose key is in ``[lower, upper)``; ``None`` is unbounded, and slice 0 also takes NULL keys."""

    index: int
    lower: KeyValue | None = None
    upper: KeyValue | None = None

    @property
    def whole(self) -> bool:
        """True when the slice is the whole window (no key filter at all)."""
        return self.lower is None and self.upper is None

    def predicate(self, column: sql.Composable) -> sql.Composable:
        """The slice's filter on ``column`` (an identifier of the query's result)."""
        parts: list[sql.Composable] = []
        if self.lower is not None:
            parts.append(sql.SQL("{} >= {}").format(column, sql.Literal(self.lower)))
        if self.upper is not None:
            below = sql.SQL("{} < {}").format(column, sql.Literal(self.upper))
            if self.lower is None:  # the first slice also takes the NULL keys (validation rejects them)
                below = sql.SQL("({} OR {} IS NULL)").format(below, column)
            parts.append(below)
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")

    def describe(self) -> str:
        lower = "-inf" if self.lower is None else repr(self.lower)
        upper = "+inf" if self.upper is None else repr(self.upper)
        return f"slice {self.index} [{lower}, {upper})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeySlice:
        return cls(**data)


WHOLE = KeySlice(0)


def chain(bounds: list[KeyValue]) -> tuple[KeySlice, ...]:
    """Slices from sorted, distinct inner bounds: ``n`` bounds make ``n + 1`` chained slices."""
    edges: list[KeyValue | None] = [None, *bounds, None]
    return tuple(KeySlice(i, edges[i], edges[i + 1]) for i in range(len(edges) - 1))


def slice_count(estimated_rows: int | None, slice_rows: int, max_slices: int) -> int:
    """How many slices a window of ``estimated_rows`` gets: one per ``slice_rows``, at most ``max_slices``.

    Without an estimate (not PostgreSQL) or below ``slice_rows`` the window is one slice:
    a small window pays no extra task start-up and no sampling query.
    """
    if not estimated_rows or estimated_rows <= slice_rows:
        return 1
    return max(1, min(max_slices, math.ceil(estimated_rows / slice_rows)))


def slice_query(rendered_query: str, key: str, key_slice: KeySlice) -> str:
    """The pipeline's (window-rendered) query restricted to one slice; the query itself when whole."""
    if key_slice.whole:
        return rendered_query
    column = sql.Identifier(SLICE_ALIAS, key)
    statement = sql.SQL("SELECT * FROM ({query}) AS {alias} WHERE {predicate}").format(
        query=sql.SQL(rendered_query),  # the operator's own SQL from the config
        alias=sql.Identifier(SLICE_ALIAS),
        predicate=key_slice.predicate(column),
    )
    return db.render(statement)


def cut(source_url: str, rendered_query: str, key: str, slices: int, estimated_rows: int) -> tuple[KeySlice, ...]:
    """Cut the window into about ``slices`` slices of even size, from a sample of its keys.

    One pass of the query on the source (its rows are not sent: only the sampled keys'
    quantiles come back). Duplicate quantiles (a key repeated over many rows) merge, so
    there may be fewer slices than asked; an empty window is one slice.
    """
    if slices <= 1 or not db.is_postgres(source_url):
        return (WHOLE,)
    fraction = min(1.0, SAMPLE_KEYS / max(estimated_rows, 1))
    column = sql.Identifier(SLICE_ALIAS, key)
    statement = sql.SQL(
        "SELECT percentile_disc({fractions}::float8[]) WITHIN GROUP (ORDER BY {column}) "
        "FROM ({query}) AS {alias} WHERE {column} IS NOT NULL AND random() < {fraction}"
    ).format(
        fractions=sql.Literal([i / slices for i in range(1, slices)]),
        column=column,
        query=sql.SQL(rendered_query),  # the operator's own SQL from the config
        alias=sql.Identifier(SLICE_ALIAS),
        fraction=sql.Literal(fraction),
    )
    with db.pg_connect(source_url) as conn:
        row = conn.execute(db.render(statement)).fetchone()
    quantiles = row[0] if row else None
    if not quantiles:
        return (WHOLE,)
    bounds: list[KeyValue] = []
    for value in quantiles:
        if value is not None and (not bounds or value != bounds[-1]):  # sorted by the source's own collation
            bounds.append(value if isinstance(value, int | str) else str(value))
    return chain(bounds)
