"""The only module that knows Airflow: turns a task's context and connections into engine inputs.

Imported inside tasks (never at DAG-parse time beyond the names it defines), so the
engine stays testable without a scheduler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

from batchscore import settings
from batchscore.errors import PermanentError, one_line
from batchscore.pipeline.config import MODEL_REF, PipelineConfig
from batchscore.pipeline.schedule_config import AssetSchedule, grid_cron
from batchscore.pipeline.windows import Window, resolve_window
from batchscore.run.planning import Endpoints

log = logging.getLogger(__name__)


class ParamError(PermanentError, ValueError):
    """A trigger-form parameter is malformed; the run stops before anything is written."""

    remedy = "trigger again with valid parameters (see the trigger form's field descriptions)"


def connection_url(conn_id: str) -> str:
    """An Airflow connection, read through the Task SDK, as a database URL the engine understands."""
    from airflow.sdk import Connection

    return url_of(Connection.get(conn_id))


def url_of(conn: Any) -> str:
    """A connection object (Task SDK or core model) as a URL.

    PostgreSQL connections become ``postgresql://user:pw@host:port/db``; a connection whose
    extra holds ``sqlalchemy_url`` (any other warehouse) is used as given.
    """
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    if conn.conn_type in ("postgres", "postgresql"):
        auth = quote(conn.login or "", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        host = conn.host or "localhost"
        port = f":{conn.port}" if conn.port else ""
        query = f"?sslmode={quote(str(extra['sslmode']))}" if extra.get("sslmode") else ""
        return f"postgresql://{auth}@{host}{port}/{quote(conn.schema or 'postgres', safe='')}{query}"
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    return str(conn.get_uri())


def endpoints(config: PipelineConfig, *, with_mlflow: bool = False) -> Endpoints:
    """The run's databases and registry; the MLflow server too with ``with_mlflow`` (only ``plan`` talks to it)."""
    return Endpoints(
        source_url=connection_url(config.source.conn_id),
        scores_url=connection_url(config.output.conn_id),
        registry=settings.model_registry_root(),
        mlflow_uri=mlflow_tracking_uri(config.model.mlflow_conn_id) if with_mlflow and config.model.mlflow else None,
    )


def evaluation_endpoints(config: PipelineConfig) -> Endpoints:
    """The run's endpoints plus the outcomes' database when ``outcomes.conn_id`` names another connection."""
    base = endpoints(config)
    conn_id = config.outcomes.conn_id if config.outcomes else None
    if conn_id is None or conn_id == config.source.conn_id:
        return base
    return Endpoints(base.source_url, base.scores_url, base.registry, outcomes_url=connection_url(conn_id))


def mlflow_tracking_uri(conn_id: str) -> str | None:
    """The MLflow tracking URI of an Airflow connection (``mlflow_default``), else ``MLFLOW_TRACKING_URI``.

    The connection follows the MLflow provider's convention (type HTTP; see :func:`tracking_uri_of`).
    Its credentials go where the MLflow client reads them, this task process's
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN`` when the login is
    ``token``), so they never appear in the URI that logs and run records show.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return os.environ.get("MLFLOW_TRACKING_URI") or None
    if conn.login == "token" and conn.password:
        os.environ["MLFLOW_TRACKING_TOKEN"] = conn.password
    elif conn.login and conn.password:
        os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
        os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password
    return tracking_uri_of(conn)


def tracking_uri_of(conn: Any) -> str:
    """An MLflow connection as a tracking URI: extra ``tracking_uri`` as given, else host (and port).

    As Airflow's HTTP connections have it: a host with a scheme (``https://mlflow.example.com``)
    is used as it is; a bare host gets the scheme from ``schema`` (``http`` or ``https``, default
    ``http``); ``AIRFLOW_CONN_MLFLOW_DEFAULT='http://127.0.0.1:5000'`` works too.
    """
    extra = conn.extra_dejson or {}
    if extra.get("tracking_uri"):
        return str(extra["tracking_uri"])
    host = (conn.host or "localhost").rstrip("/")
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https" if conn.conn_type == "https" else "http"
        host = f"{scheme}://{host}"
    return f"{host}:{conn.port}" if conn.port else host


def run_params(params: dict[str, Any]) -> tuple[str | None, str | None, str | None, bool]:
    """(window_start, window_end, model_version, dry_run) from the trigger form, checked."""

    def text(name: str) -> str | None:
        value = params.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ParamError(f"param {name} must be a string, got {type(value).__name__}")
        return value.strip()

    model_version = text("model_version")
    if model_version is not None and not MODEL_REF.match(model_version):
        raise ParamError(f"param model_version {model_version[:80]!r} must be a version number or an alias name")
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ParamError(f"param dry_run must be true or false, got {dry_run!r}")
    return text("window_start"), text("window_end"), model_version, dry_run


def allow_shrink(params: dict[str, Any]) -> bool:
    """The trigger form's ``allow_shrink``: this run may publish below the volume guard."""
    value = params.get("allow_shrink", False)
    if not isinstance(value, bool):
        raise ParamError(f"param allow_shrink must be true or false, got {str(value)[:40]!r}")
    return value


def is_backfill(context: Any) -> bool:
    """True for a run that ``airflow backfill create`` (or the backfill API) made."""
    run_type = getattr(context["dag_run"], "run_type", None)
    return getattr(run_type, "value", run_type) == "backfill"


def window_from_context(config: PipelineConfig, context: Any) -> Window:
    """The run's window: trigger-form params, else the data interval, else the last interval before run_after.

    A backfill run always scores its own data interval: a window in its conf (``airflow backfill
    create --dag-run-conf '{"window_start": ...}'`` gives every run of the backfill the same
    conf) would make every run score that one window, so it is ignored, with a warning.
    """
    start, end, _, _ = run_params(dict(context["params"]))
    if (start is not None or end is not None) and is_backfill(context):
        interval_start, interval_end = context.get("data_interval_start"), context.get("data_interval_end")
        log.warning(
            "window_start/window_end (%s, %s) ignored: run %s is a backfill run, which scores its own data "
            "interval [%s, %s); to score one window, trigger a manual run with it",
            start,
            end,
            context["run_id"],
            interval_start.isoformat() if interval_start else None,
            interval_end.isoformat() if interval_end else None,
        )
        start = end = None
    interval_start, interval_end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None and end is None and isinstance(config.schedule, AssetSchedule):
        from batchscore.airflow.schedules import asset_run_window

        named = asset_run_window(config, context)  # the partition's or the events' window (checked below)
        if named is not None:
            interval_start, interval_end = named.start, named.end
    return resolve_window(
        schedule=grid_cron(config.schedule),
        tz=config.timezone,
        run_after=context["dag_run"].run_after,
        data_interval_start=interval_start,
        data_interval_end=interval_end,
        param_start=start,
        param_end=end,
        max_days=config.execution.max_window_days,
    )


def check_trigger_conf(config: PipelineConfig, conf: dict[str, Any], run_after: datetime) -> Window | None:
    """The window a trigger's ``conf`` asks for, checked as ``plan`` will check it; None when it names none.

    Called by the UI plugin when a run is triggered (REST API or the trigger form), so a window
    that ends after ``run_after``, an end before the start or one end alone is refused before
    any run exists. Raises :class:`ParamError` or :class:`~batchscore.pipeline.windows.WindowError`.
    """
    start, end, _, _ = run_params(conf)
    if start is None and end is None:
        return None
    return resolve_window(
        schedule=grid_cron(config.schedule),
        tz=config.timezone,
        run_after=run_after,
        param_start=start,
        param_end=end,
        max_days=config.execution.max_window_days,
    )


def slice_workers(config: PipelineConfig, n_slices: int) -> int:
    """Scoring threads for one slice task: ``threads_per_slice``, else this worker's cores shared by the
    slices that may run on it at once (``min(slices, parallel_slices or cores)``), so slices x threads <= cores.
    """
    if config.execution.threads_per_slice:
        return config.execution.threads_per_slice
    cores = os.cpu_count() or 1
    parallel = min(n_slices, config.execution.parallel_slices or cores)
    return max(1, cores // max(1, parallel))


@contextmanager
def failing_fast() -> Iterator[None]:
    """Errors that no retry can fix fail the task at once, without its retries; others propagate (and retry).

    The Task SDK's ``AirflowFailException`` is raised from the engine's error, so the failure
    callback still finds the cause and its remedy.
    """
    try:
        yield
    except PermanentError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(one_line(exc)) from exc


def mark_failed(config: PipelineConfig, context: Any) -> None:
    """Task failure callback (after the last try): record the run as failed and drop its unpublished slices.

    The record names the stage (the task), the one-line cause and the remedy; a run that
    failed in ``plan`` gets its row here, with its window when the window could be resolved.
    """
    from batchscore.run.failures import fail_run

    stage = context["ti"].task_id
    error = context.get("exception") or f"{stage} failed without an exception (the task was killed or timed out)"
    try:
        window: Window | None = window_from_context(config, context)
    except Exception:  # the window itself may be what failed
        window = None
    try:
        where = endpoints(config)
        fail_run(config, where, context["run_id"], error, stage=stage, window=window)
    except Exception:  # the callback must never hide the task's own error
        log.exception("could not record the failure of run %s", context["run_id"])
        return
    notify_failure(config, context, error, stage=stage, window=window, scores_url=where.scores_url)


def notify_failure(
    config: PipelineConfig,
    context: Any,
    error: BaseException | str,
    *,
    stage: str,
    window: Window | None,
    scores_url: str,
) -> None:
    """Send the failed run's alert (failure, drift_hold, guard or upstream_timeout) once; never raises."""
    from batchscore.airflow.notify import notify_once, run_page
    from batchscore.run.alerts import failure_alert

    try:
        alert = failure_alert(
            pipeline=config.name,
            dag_id=config.dag_id,
            run_id=context["run_id"],
            error=error,
            stage=stage,
            window=window,
            run_page=run_page(config.name, context["run_id"]),
            task_log=getattr(context["ti"], "log_url", None),
        )
        notify_once(config, alert, context, scores_url)
    except Exception:  # an alert that cannot be built or sent never changes the run
        log.exception("could not send the alert of run %s", context["run_id"])
