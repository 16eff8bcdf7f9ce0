"""What ``make demo`` prints at the end: per pipeline, what landed in its table, read back from the run records.

Each model kind is shown by what it writes: a classifier's and a regressor's score
distribution (mean and the 10th/50th/90th percentiles of the run record's summary), a
clusterer's rows per segment (exact label counts) and the segment centres from its manifest.
A classifier and a regressor with outcomes also show their evaluated windows: the realised
ROC AUC and log loss, or RMSE and MAE, beside the same metric on the model's training holdout.
"""

from __future__ import annotations

from typing import Any

import psycopg

from batchscore import db, settings
from batchscore.local.demo.catalog import ALIAS, DEMO_MODELS, DemoModel
from batchscore.local.stack import ADMIN_PASSWORD, ADMIN_USER, LocalStack
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig, load_config
from batchscore.reports.performance_charts import holdout_value

SCORE_FORMAT = {"classifier": ".4f", "regressor": ".1f"}
# Column headings for the segment centres (the feature names would make the table 150 characters wide).
SHORT_NAMES = {
    "tenure_days": "tenure d",
    "monthly_spend": "spend/mo",
    "txn_count_7d": "txns 7d",
    "txn_amount_7d": "amount 7d",
    "avg_session_minutes": "session min",
    "days_since_last_login": "login d ago",
    "support_tickets_30d": "tickets 30d",
}
RUNS_SHOWN = 6
# The realised metrics shown per evaluated window, each beside its training holdout value.
REALISED = {
    "classifier": (("roc_auc", "ROC AUC"), ("log_loss", "log loss")),
    "regressor": (("rmse", "RMSE"), ("mae", "MAE")),
}


def latest_runs(conn: psycopg.Connection[Any], pipeline: str) -> list[tuple[Any, ...]]:
    """The newest windows, each once, by the last run that scored it (a re-run's scores replaced the first's)."""
    return conn.execute(
        """
        SELECT window_start::date, rows_written, rows_rejected, score_summary, model, run_id FROM (
            SELECT DISTINCT ON (window_start, window_end) window_start, rows_written, rows_rejected,
                   score_summary, model_name || ' v' || model_version AS model, run_id
            FROM scoring.scoring_runs WHERE pipeline = %s AND status = 'success'
            ORDER BY window_start DESC, window_end DESC, finished_at DESC NULLS LAST, started_at DESC
        ) AS latest ORDER BY window_start DESC LIMIT %s
        """,
        (pipeline, RUNS_SHOWN),
    ).fetchall()


def _value(summary: dict[str, Any] | None, key: str, fmt: str) -> str:
    # An empty window (a quiet day, a late upstream load) has no mean: shown as such, never a crash.
    value = (summary or {}).get(key)
    return f"{value:>10{fmt}}" if value is not None else f"{'-':>10}"


def _score_lines(runs: list[tuple[Any, ...]], fmt: str) -> list[str]:
    lines = [
        f"  {'window start':<12} {'scored':>9} {'rejected':>9} {'mean':>10} {'p10':>10} {'p50':>10} {'p90':>10}"
        "  model        run"
    ]
    for day, written, rejected, summary, model, run_id in runs:
        values = " ".join(_value(summary, k, fmt) for k in ("mean", "p10", "p50", "p90"))
        lines.append(f"  {day!s:<12} {written or 0:>9,} {rejected or 0:>9,} {values}  {model:<12} {run_id}")
    return lines


def _segment_lines(runs: list[tuple[Any, ...]], manifest: ModelManifest) -> list[str]:
    segments: dict[str, Any] = manifest.training.get("segments", {})
    ids = sorted(segments, key=int)
    sizes_heading = f"rows per segment ({' / '.join(ids)})"
    lines = [f"  {'window start':<12} {'scored':>9} {'rejected':>9}  {sizes_heading:<36}  model        run"]
    for day, written, rejected, summary, model, run_id in runs:
        labels = (summary or {}).get("labels", {})
        sizes = " / ".join(f"{labels.get(k, 0):,}" for k in ids)
        lines.append(f"  {day!s:<12} {written or 0:>9,} {rejected or 0:>9,}  {sizes:<36}  {model:<12} {run_id}")
    features = list(manifest.feature_names)
    lines += [
        "",
        f"  segment centres ({manifest.name} v{manifest.version}, from its training sample):",
        "  " + f"{'segment':>8} {'share':>6} " + " ".join(f"{SHORT_NAMES.get(f, f):>11}" for f in features),
    ]
    for k in ids:
        centre = segments[k]["centre"]
        values = " ".join(f"{centre[f]:>11.1f}" for f in features)
        lines.append("  " + f"{k:>8} {segments[k]['share']:>6.1%} " + values)
    return lines


def _realised(value: Any) -> str:
    """A metric in 9 characters: 4 decimals below 10 (AUC, log loss), 2 above (RMSE in currency); ``-`` when absent."""
    if not isinstance(value, int | float):
        return f"{'-':>9}"
    return f"{value:>9.4f}" if abs(value) < 10 else f"{value:>9.2f}"


def performance_lines(
    conn: psycopg.Connection[Any], registry: ModelRegistry, config: PipelineConfig, task: str
) -> list[str]:
    """The champion's evaluated windows (``scoring.performance``), newest first: rows matched and without an
    outcome, and each realised metric of ``REALISED`` beside the model's training holdout value."""
    if config.outcomes is None or task not in REALISED:
        return []
    if conn.execute("SELECT to_regclass('scoring.performance')").fetchone() == (None,):
        return []
    rows = conn.execute(
        """
        SELECT window_start::date, model_name, model_version, rows_matched, rows_without_outcome, metrics
        FROM scoring.performance WHERE pipeline = %s AND role = 'champion' AND status = 'evaluated'
        ORDER BY window_start DESC LIMIT %s
        """,
        (config.name, RUNS_SHOWN),
    ).fetchall()
    horizon = config.outcomes.horizon
    if not rows:
        return [
            "",
            f"  realised performance: no window evaluated yet (its outcomes are complete {horizon} after it ends)",
        ]
    heading = " ".join(f"{title:>9} {'holdout':>9}" for _, title in REALISED[task])
    lines = [
        "",
        f"  realised on the outcomes (scoring.performance; a window is judged {horizon} after it ends):",
        f"  {'window start':<12} {'matched':>9} {'no outcome':>10} {heading}  model",
    ]
    manifests: dict[tuple[str, int], dict[str, Any]] = {}
    for day, name, version, matched, missing, metrics in rows:
        if (name, version) not in manifests:
            manifests[(name, version)] = dict(registry.resolve(name, str(version)).metrics)
        values = " ".join(
            f"{_realised(metrics.get(key))} {_realised(holdout_value(manifests[(name, version)], key))}"
            for key, _ in REALISED[task]
        )
        lines.append(f"  {day!s:<12} {matched:>9,} {missing:>10,} {values}  {name} v{version}")
    return lines


def _section(conn: psycopg.Connection[Any], registry: ModelRegistry, demo: DemoModel) -> list[str]:
    config = load_config(settings.pipelines_dir() / f"{demo.pipeline}.yaml")
    manifest = registry.resolve(demo.name, ALIAS)
    runs = latest_runs(conn, config.name)
    lines = [f"{config.name} ({manifest.task}): {demo.writes}, in {config.output.table}"]
    if manifest.task == "clusterer":
        return lines + _segment_lines(runs, manifest)
    return (
        lines
        + _score_lines(runs, SCORE_FORMAT[manifest.task])
        + performance_lines(conn, registry, config, manifest.task)
    )


def summary(stack: LocalStack) -> str:
    url = stack.database_url("scores")
    registry = ModelRegistry(stack.env()["BATCHSCORE_MODEL_REGISTRY"])
    lines = [f"Scores are in {db.redact(url)}:"]
    with psycopg.connect(db.libpq_url(url)) as conn:
        for demo in DEMO_MODELS:
            lines += ["", *_section(conn, registry, demo)]
        reasons = conn.execute(
            "SELECT pipeline, reason, count(*) FROM scoring.rejects WHERE pipeline = ANY(%s) "
            "GROUP BY 1, 2 ORDER BY 1, 3 DESC",
            ([demo.pipeline for demo in DEMO_MODELS],),
        ).fetchall()
    lines += ["", "Rejected rows (scoring.rejects) by pipeline and reason:"]
    lines += [f"  {pipeline:<10} {n:>6,}  {reason}" for pipeline, reason, n in reasons] or ["  none"]
    lines += [
        "",
        "Next:",
        f"  make airflow   # Airflow UI at http://127.0.0.1:{stack.api_port} "
        f"(user {ADMIN_USER}, password {ADMIN_PASSWORD})",
        "  make psql      # SQL shell on the scores database",
        "  make stop      # stop the local PostgreSQL and Airflow",
    ]
    return "\n".join(lines)
