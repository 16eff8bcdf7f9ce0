"""The names of everything made beside a scores table, derived by one rule that keeps them apart.

A scores table ``churn_scores`` has a lineage view, a partition per window and a table per
slice (with its rejects table), all in the table's schema::

    churn_scores_lineage
    churn_scores_w202611010000_1a2b3c4d      (window start, then 8 hex digits of the exact window)
    churn_scores_l1234, churn_scores_l1234_rej

When ``<table>_<suffix>`` would pass PostgreSQL's 63-byte limit (which silently truncates
longer names), the table's name is cut and 8 hex digits of the sha256 of its full name are
put before the suffix::

    a_very_long_table_name_that_goe_5f0c1e2a_w202611010000_1a2b3c4d

So two tables (a table and its ``_shadow``, or two tables sharing a long prefix) never share
a derived name unless their full names' sha256 agree in 32 bits, and the suffix (never cut)
keeps the kinds apart. Names that fit are the names earlier versions gave; the ``legacy_``
functions give the cut names older versions made for long tables, so those are still found.
:func:`written_tables` lists what a pipeline writes (what it owns: :mod:`batchscore.sink.ownership`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window

MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1
TABLE_HASH_CHARS = 8


def table_hash(table: str) -> str:
    """8 hex digits of the sha256 of a table's full (unqualified) name."""
    return hashlib.sha256(table.encode()).hexdigest()[:TABLE_HASH_CHARS]


def derived_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>``, or ``<table cut>_<hash of table>_<suffix>`` when that would pass 63 bytes.

    ``table`` is the unqualified name of the scores table (ASCII, as the config allows);
    ``suffix`` is short and never cut.
    """
    whole = f"{table}_{suffix}"
    if len(whole.encode()) <= MAX_IDENTIFIER:
        return whole
    room = MAX_IDENTIFIER - len(suffix) - TABLE_HASH_CHARS - 2
    if room < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a table name within {MAX_IDENTIFIER} bytes")
    return f"{table[:room]}_{table_hash(table)}_{suffix}"


def window_suffix(window: Window) -> str:
    """``w<start YYYYmmddHHMM>_<8 hex digits of the exact bounds>``: readable, unique per window."""
    digest = hashlib.sha256(f"{window.start.isoformat()}|{window.end.isoformat()}".encode()).hexdigest()[:8]
    return f"w{window.start:%Y%m%d%H%M}_{digest}"


def partition_name(table: str, window: Window) -> str:
    """The partition holding one window's scores of ``table`` (unqualified)."""
    return derived_name(table, window_suffix(window))


def slice_table_name(table: str, lineage_id: int) -> str:
    """The table one slice's scores are loaded into; it becomes a leaf of its window's partition."""
    return derived_name(table, f"l{lineage_id}")


def slice_rejects_name(table: str, lineage_id: int) -> str:
    """The table one slice's rejected rows are kept in until publish."""
    return derived_name(table, f"l{lineage_id}_rej")


def lineage_view(qualified: str) -> str:
    """The view beside ``schema.table`` that joins each score to its run and model artifact (unqualified)."""
    return derived_name(qualified.split(".")[1], "lineage")


def legacy_partition_name(table: str, window: Window) -> str:
    """The name versions before derived names gave a window's partition (the table cut at 36)."""
    return f"{table[:36]}_{window_suffix(window)}"


def legacy_slice_table_name(table: str, lineage_id: int) -> str:
    """The name versions before derived names gave a slice table (the table cut at 40)."""
    return f"{table[:40]}_l{lineage_id}"


def legacy_lineage_view(qualified: str) -> str:
    """The name versions before derived names gave the lineage view (the table cut at 55)."""
    return f"{qualified.split('.')[1][:55]}_lineage"


Role = Literal["scores", "shadow", "lineage view"]


@dataclass(frozen=True)
class Written:
    """One table (or view) a pipeline writes, and the scores table whose history says who wrote it first."""

    table: str  # schema.name
    role: Role
    scores_table: str


def written_tables(config: PipelineConfig) -> list[Written]:
    """Every table and view ``config``'s runs write, by qualified name."""
    tables: list[tuple[str, Role]] = [(config.output.table, "scores")]
    if config.shadow is not None:
        tables.append((config.shadow_table, "shadow"))
    written = []
    for table, role in tables:
        written.append(Written(table, role, table))
        written.append(Written(f"{table.split('.', maxsplit=1)[0]}.{lineage_view(table)}", "lineage view", table))
    return written
