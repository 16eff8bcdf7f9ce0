"""Who owns each table a pipeline writes: one row per table in ``scoring.table_owners``, claimed atomically.

A pipeline writes its scores table, its lineage view, and with a challenger the
``<table>_shadow`` table and its lineage view (its slice, partition and rejects tables are
derived from those names, :mod:`batchscore.pipeline.table_names`, and its rejected rows are kept in
``scoring.rejects`` under its name). ``plan`` claims every one of them with one
``INSERT ... ON CONFLICT`` statement: the table's primary key decides between two pipelines
planning at once, so there is no check-then-act window. A table claimed by another pipeline
stops the run before anything is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchscore.errors import PermanentError
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.table_names import written_tables

if TYPE_CHECKING:
    import psycopg


class TableOwned(PermanentError, ValueError):
    """A table this pipeline would write is owned by another pipeline."""

    remedy = (
        "give this pipeline an output.table of its own; if the owner is gone for good and this pipeline takes its "
        "tables over, hand them over first: batchscore tables hand-over <owner> <this pipeline>"
    )


def claim_tables(conn: psycopg.Connection[Any], config: PipelineConfig) -> None:
    """Claim every table ``config`` writes, or raise :class:`TableOwned` naming the owners (autocommit ``conn``).

    A table that has no owner row yet (made before owners were recorded) goes to the pipeline
    that published to it first, as ``scoring.lineage`` remembers; otherwise to this pipeline.
    """
    written = written_tables(config)
    rows = conn.execute(
        """
        INSERT INTO scoring.table_owners AS o (table_name, pipeline, role)
        SELECT w.table_name,
               coalesce((SELECT l.pipeline FROM scoring.lineage AS l
                         WHERE l.output_table = w.scores_table AND l.published_at IS NOT NULL
                         ORDER BY l.published_at LIMIT 1), %(pipeline)s),
               w.role
        FROM unnest(%(tables)s::text[], %(roles)s::text[], %(scores)s::text[]) AS w(table_name, role, scores_table)
        ON CONFLICT (table_name) DO UPDATE SET pipeline = o.pipeline
        RETURNING o.table_name, o.pipeline, o.role
        """,
        {
            "pipeline": config.name,
            "tables": [w.table for w in written],
            "roles": [w.role for w in written],
            "scores": [w.scores_table for w in written],
        },
    ).fetchall()
    taken = sorted((str(t), str(p), str(r)) for t, p, r in rows if p != config.name)
    if taken:
        ours = {w.table: w.role for w in written}
        raise TableOwned(
            f"pipeline {config.name} would write "
            + "; ".join(f"{table} (its {ours[table]}), the {role} of pipeline {owner}" for table, owner, role in taken)
        )


def hand_over_tables(conn: psycopg.Connection[Any], owner: str, to: str) -> list[str]:
    """Give every table ``owner`` owns to pipeline ``to`` (a pipeline renamed, or retired for another); the tables.

    A hand-over, not a release: a table without an owner row would go back to the pipeline
    that published to it first.
    """
    rows = conn.execute(
        "UPDATE scoring.table_owners SET pipeline = %s, claimed_at = now() WHERE pipeline = %s RETURNING table_name",
        (to, owner),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)
