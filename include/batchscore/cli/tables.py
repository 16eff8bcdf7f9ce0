"""The ``tables`` commands: who owns each table pipelines write, handing tables over, sweeping old slice tables."""

from __future__ import annotations

import argparse
from typing import Any


def _scores_url(args: argparse.Namespace) -> str:
    from batchscore.local.stack import LocalStack

    return str(args.scores_url or LocalStack().database_url("scores"))


def cmd_owners(args: argparse.Namespace) -> None:
    from batchscore import db
    from batchscore.sink import run_record

    with db.pg_connect(_scores_url(args), autocommit=True) as conn:
        run_record.apply_schema(conn)
        rows = conn.execute(
            "SELECT table_name, pipeline, role, claimed_at FROM scoring.table_owners ORDER BY table_name"
        ).fetchall()
    for table, pipeline, role, claimed in rows:
        print(f"{table}\t{pipeline}\t{role}\tclaimed {claimed:%Y-%m-%d %H:%M}")


def cmd_hand_over(args: argparse.Namespace) -> None:
    from batchscore import db
    from batchscore.sink import run_record
    from batchscore.sink.ownership import hand_over_tables

    with db.pg_connect(_scores_url(args), autocommit=True) as conn:
        run_record.apply_schema(conn)
        moved = hand_over_tables(conn, args.owner, args.to)
    if not moved:
        raise ValueError(f"pipeline {args.owner} owns no table (see: batchscore tables owners)")
    for table in moved:
        print(f"{table}: now owned by pipeline {args.to}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from datetime import timedelta

    from batchscore import settings
    from batchscore.pipeline.config import load_config
    from batchscore.sink.sweep import sweep_unpublished

    config = load_config(settings.pipelines_dir() / f"{args.pipeline}.yaml")
    hours = args.older_than_hours if args.older_than_hours is not None else config.execution.sweep_after_hours
    swept = sweep_unpublished(
        _scores_url(args), pipeline=config.name, older_than=timedelta(hours=hours), by="batchscore tables sweep"
    )
    for table in swept.dropped:
        print(f"dropped {table}")
    for table in swept.busy:
        print(f"left {table}: a session holds it; the next sweep tries again")
    print(f"{len(swept.dropped)} unpublished slice table(s) older than {hours:g} h dropped")


def add_tables_parser(sub: Any) -> None:
    """The ``tables`` command and its subcommands on the CLI's subparsers."""
    p = sub.add_parser("tables", help="the tables pipelines write: owners, hand-over, sweep")
    tables = p.add_subparsers(dest="tables_command", required=True)
    t = tables.add_parser("owners", help="list every owned table and view, with its pipeline and role")
    t.add_argument("--scores-url")
    t.set_defaults(func=cmd_owners)
    t = tables.add_parser("hand-over", help="give every table a (retired or renamed) pipeline owns to another")
    t.add_argument("owner", help="the pipeline that owns the tables now")
    t.add_argument("to", help="the pipeline that takes them over")
    t.add_argument("--scores-url")
    t.set_defaults(func=cmd_hand_over)
    t = tables.add_parser("sweep", help="drop a pipeline's unpublished slice tables older than its sweep_after_hours")
    t.add_argument("--pipeline", required=True)
    t.add_argument("--older-than-hours", type=float, help="instead of the pipeline's execution.sweep_after_hours")
    t.add_argument("--scores-url")
    t.set_defaults(func=cmd_sweep)
