"""``batchscore models``: the registry for the people who feed it (register, list, show, promote, which).

A data scientist's file (or an MLflow version) becomes a registry version with one command,
optionally with its drift reference; an alias moves with another; ``which`` answers "which
model, artifact and run made this entity's score on that day".
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchscore import settings

if TYPE_CHECKING:
    from batchscore.models.alias_log import Unset
    from batchscore.models.manifest import FeatureSpec
    from batchscore.models.registry import ModelRegistry


def parse_window(start: str, end: str) -> object:
    """A window from two command-line instants (checked like a run's)."""
    from batchscore.pipeline.windows import Window, parse_instant

    return Window(parse_instant(start), parse_instant(end))


def cmd_models(args: argparse.Namespace) -> None:
    """``batchscore models register|list|show|promote|which|gc``: the registry for the people who feed it."""
    from batchscore.models.manifest import RegistryError
    from batchscore.models.registry import ModelRegistry

    registry = ModelRegistry(settings.model_registry_root())
    if args.action == "register":
        from batchscore.models.intake import features_of, read_model_file
        from batchscore.pipeline.config_rules import IDENTIFIER

        if not IDENTIFIER.match(args.name):
            raise RegistryError(f"model name {args.name!r} must be a lower-case identifier ([a-z_][a-z0-9_]*)")
        if bool(args.file) == bool(args.mlflow):
            raise RegistryError("give either --file or --mlflow")
        if args.mlflow:
            _register_from_mlflow(registry, args)
            return
        estimator, source = read_model_file(Path(args.file), trust_sha256=args.trust_pickle)
        features = features_of(estimator)
        reference = None
        if args.reference:
            features, reference = _reference(args, estimator, features)
        manifest = registry.register(
            args.name,
            estimator,
            features,
            training={"source": source},
            aliases=tuple(args.alias),
            reference=reference,
        )
        kinds = ", ".join(f"{f.name} ({f.kind})" for f in manifest.features)
        print(f"registered {manifest.name} v{manifest.version} ({manifest.task}) sha256 {manifest.sha256}")
        print(f"features: {kinds}")
        if reference:
            print(f"drift reference: {reference['rows']:,} rows from {reference['source']}")
    elif args.action == "list":
        for name in registry.names():
            aliases = registry.aliases(name)
            named = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "no aliases"
            print(f"{name}: versions {registry.versions(name)}; {named}")
    elif args.action == "show":
        manifest = registry.resolve(args.name, args.version or "latest")
        from batchscore.pipeline.folder import load_each

        users = [c.name for c in load_each(settings.pipelines_dir()).configs if c.model.name == args.name]
        shown = json.loads(manifest.to_json())
        reference = shown.pop("reference", None)  # bins of every column: summarised below
        print(json.dumps(shown, indent=2, sort_keys=True))
        if reference:
            columns = ", ".join(b["column"] for b in reference["bins"])
            print(f"drift reference: {reference['rows']:,} rows from {reference['source']}; bins for {columns}")
        else:
            print("drift reference: none (register with --reference to watch drift)")
        print(f"aliases: {json.dumps(registry.aliases(args.name))}")
        print(f"used by pipelines: {', '.join(users) or 'none'}")
        for change in registry.alias_history(args.name)[-5:]:
            print(f"alias change: {change['alias']} v{change['from']} -> v{change['to']} at {change['at']}")
    elif args.action == "promote":
        if not args.version.isdigit():
            raise RegistryError(f"--version {args.version!r} must be a version number")
        previous = registry.promote(
            args.name, args.alias, int(args.version), by=os.environ.get("USER", ""), expected=_expected(args.expect)
        )
        print(f"{args.name}: {args.alias} -> v{args.version} (was {f'v{previous}' if previous else 'unset'})")
    elif args.action == "gc":
        _gc(registry, args)
    else:
        _which(args)


def _gc(registry: ModelRegistry, args: argparse.Namespace) -> None:
    """``models gc``: list the files no version uses (older than the grace period); ``--delete`` removes them."""
    from datetime import timedelta

    from batchscore.models.manifest import RegistryError
    from batchscore.models.registry_sweep import find_orphans, remove_orphans

    if not 0 <= args.older_than_hours <= 24 * 366:
        raise RegistryError(f"--older-than-hours {args.older_than_hours:g} must be between 0 and 8784")
    grace = timedelta(hours=args.older_than_hours)
    names = [args.name] if args.name else registry.names()
    total = 0
    for name in names:
        orphans = (remove_orphans if args.delete else find_orphans)(registry, name, grace=grace)
        for orphan in orphans:
            total += orphan.size
            print(f"{'removed' if args.delete else 'unused'}: {orphan.url} ({orphan.size:,} bytes, {orphan.reason})")
    verb = "removed" if args.delete else "can be removed with --delete"
    print(f"{total:,} bytes {verb} (files unused for more than {args.older_than_hours:g} h)")


def _expected(expect: str | None) -> int | Unset | None:
    """``--expect 3`` / ``--expect unset``: the alias's current target the promote must find, or refuse."""
    from batchscore.models.alias_log import ANY
    from batchscore.models.manifest import RegistryError

    if expect is None:
        return ANY
    if expect == "unset":
        return None
    if not expect.isdigit():
        raise RegistryError(f"--expect {expect!r} must be a version number or 'unset'")
    return int(expect)


def _register_from_mlflow(registry: object, args: argparse.Namespace) -> None:
    """``models register --mlflow models:/x@alias``: the import ``plan`` does, by hand (reused if done before)."""
    from batchscore.models.mlflow_import import import_model
    from batchscore.models.mlflow_source import MlflowSourceError
    from batchscore.models.registry import ModelRegistry
    from batchscore.pipeline.model_config import MlflowModelRef

    assert isinstance(registry, ModelRegistry)
    tracking_uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise MlflowSourceError("no MLflow tracking server: pass --mlflow-uri or set MLFLOW_TRACKING_URI")
    try:
        ref = MlflowModelRef.parse(args.mlflow)
    except ValueError as exc:
        raise MlflowSourceError(f"--mlflow: {exc}") from None
    imported = import_model(
        registry,
        args.name,
        tracking_uri,
        ref,
        pinned=args.trust_pickle,
        aliases=tuple(args.alias),
        reference=(lambda estimator, features: _reference(args, estimator, features)) if args.reference else None,
    )
    manifest, origin = imported.manifest, imported.lineage
    print(
        f"{'already imported as' if imported.reused else 'registered'} {manifest.name} v{manifest.version} "
        f"({manifest.task}) from MLflow {origin['name']} v{origin['version']} (run {origin['run_id']}), "
        f"sha256 {manifest.sha256}"
    )
    print(f"features: {', '.join(f'{f.name} ({f.kind})' for f in manifest.features)}")
    if manifest.reference:
        print(f"drift reference: {manifest.reference['rows']:,} rows from {manifest.reference['source']}")


def _reference_rows(args: argparse.Namespace) -> tuple[Any, str]:
    """``--reference``'s rows and a description: a Parquet/CSV file, or a query over ``--reference-window``."""
    if not args.reference_window:
        from batchscore.models.intake import read_reference_file

        return read_reference_file(Path(args.reference)), Path(args.reference).name
    import pyarrow as pa
    from pydantic import ValidationError

    from batchscore.local.stack import LocalStack
    from batchscore.models.manifest import RegistryError
    from batchscore.pipeline.source_config import SourceConfig
    from batchscore.source.extract import source_batches
    from batchscore.source.slices import WHOLE

    try:  # the same rules as a pipeline's query: one SELECT bounded by :window_start and :window_end
        query = SourceConfig(conn_id="reference", query=args.reference).query
    except ValidationError as exc:
        raise RegistryError(f"--reference: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    start, _, end = args.reference_window.partition("/")
    window = parse_window(start, end)
    url = args.reference_url or LocalStack().database_url("warehouse")
    schema, batches = source_batches(url, query, window, "", WHOLE, 100_000)  # type: ignore[arg-type]
    return pa.Table.from_batches(list(batches), schema=schema), f"query over {window}"


def _reference(
    args: argparse.Namespace, estimator: object, features: tuple[FeatureSpec, ...]
) -> tuple[tuple[FeatureSpec, ...], dict[str, Any]]:
    """The features (categories completed from the reference) and the drift reference for ``--reference``."""
    from batchscore.models.intake import reference_frame, with_reference_categories
    from batchscore.scoring.drift import drift_reference

    rows, described = _reference_rows(args)
    table = reference_frame(rows, features, f"--reference {described}")
    features = with_reference_categories(features, table)
    return features, drift_reference(estimator, features, table, source=described)


def _which(args: argparse.Namespace) -> None:
    """Which model version, artifact and Airflow run scored one entity on one day."""
    from datetime import timedelta

    import psycopg
    from psycopg import sql

    from batchscore import db
    from batchscore.local.stack import LocalStack
    from batchscore.pipeline.config import load_config
    from batchscore.pipeline.table_names import lineage_view

    config = load_config(settings.pipelines_dir() / f"{args.pipeline}.yaml")
    day = datetime.combine(date.fromisoformat(args.date), datetime.min.time(), tzinfo=UTC)
    url = args.scores_url or LocalStack().database_url("scores")
    view = sql.Identifier(config.output.schema_name, lineage_view(config.output.table))
    query = sql.SQL(
        "SELECT window_start, window_end, score, label, model_name, model_version, model_sha256, run_id "
        "FROM {view} WHERE {key}::text = %s AND window_start < %s AND window_end > %s ORDER BY window_start"
    ).format(view=view, key=sql.Identifier(config.entity_key))
    with psycopg.connect(db.libpq_url(url)) as conn:
        rows = conn.execute(query, (args.key, day + timedelta(days=1), day)).fetchall()
    if not rows:
        print(f"no score for {config.entity_key} {args.key} in a window of {args.date} ({config.output.table})")
    for start, end, score, label, model, version, sha256, run_id in rows:
        print(
            f"{config.entity_key} {args.key} window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}): score {score} "
            f"label {label}; model {model} v{version} sha256 {sha256}; Airflow run {run_id}"
        )


def add_models_parser(sub: Any) -> None:
    """The ``models`` command and its subcommands on the CLI's subparsers."""
    p = sub.add_parser("models", help="register, list, show, promote models; which model scored an entity")
    models = p.add_subparsers(dest="action", required=True)
    m = models.add_parser(
        "register", help="register a .skops file (or .joblib/.pkl with --trust-pickle), or import an MLflow model"
    )
    m.add_argument("--name", required=True)
    m.add_argument("--file")
    m.add_argument(
        "--mlflow", metavar="URI", help="an MLflow model: models:/<name>@<alias> or models:/<name>/<version>"
    )
    m.add_argument("--mlflow-uri", help="MLflow tracking URI for --mlflow (default: MLFLOW_TRACKING_URI)")
    m.add_argument("--alias", action="append", default=[], help="point this alias at the new version (repeatable)")
    m.add_argument(
        "--trust-pickle",
        metavar="SHA256",
        help="load a joblib/pickle file (it runs code) whose sha256 is this one (sha256sum model.joblib); "
        "with --mlflow, the sha256 of the MLflow model's pickle file",
    )
    m.add_argument(
        "--reference",
        help="the drift reference: a .parquet/.csv of the training data, or a SQL query with --reference-window",
    )
    m.add_argument("--reference-window", metavar="START/END", help="the window of a --reference query")
    m.add_argument("--reference-url", help="the database of a --reference query (default: the local warehouse)")
    models.add_parser("list", help="every model, its versions and aliases")
    m = models.add_parser("show", help="a version's manifest, the aliases and the pipelines using the model")
    m.add_argument("name")
    m.add_argument("version", nargs="?", help="a version number or alias (default: latest)")
    m = models.add_parser("promote", help="point an alias (e.g. champion) at a version, atomically")
    m.add_argument("name")
    m.add_argument("--alias", required=True)
    m.add_argument("--version", required=True)
    m.add_argument(
        "--expect",
        metavar="VERSION|unset",
        help="refuse unless the alias points at this version now (compare-and-swap; 'unset': not set yet)",
    )
    m = models.add_parser("gc", help="files no version uses (left by writers that died); --delete removes them")
    m.add_argument("--name", help="one model (default: every model)")
    m.add_argument("--older-than-hours", type=float, default=24.0, help="grace for writers still at work (24)")
    m.add_argument("--delete", action="store_true", help="remove them (default: only list)")
    m = models.add_parser("which", help="which model version and Airflow run scored an entity on a day")
    m.add_argument("--pipeline", required=True)
    m.add_argument("--key", required=True)
    m.add_argument("--date", required=True, help="YYYY-MM-DD")
    m.add_argument("--scores-url")
    p.set_defaults(func=cmd_models)
