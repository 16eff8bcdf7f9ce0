import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType

from batchscore.airflow.glue import ParamError, allow_shrink, failing_fast, run_params, window_from_context
from batchscore.errors import one_line, remedy_of, root_cause
from batchscore.models.manifest import RegistryError
from batchscore.pipeline.config import ConfigError, load_config
from batchscore.pipeline.windows import Window, WindowError
from batchscore.run.planning import PlanError
from batchscore.scoring.features import SchemaMismatch
from batchscore.sink.publish import RejectThresholdExceeded

REPO = Path(__file__).resolve().parents[3]


def test_empty_form_means_defaults() -> None:
    assert run_params({}) == (None, None, None, False)
    assert run_params({"window_start": "", "window_end": "  ", "model_version": None, "dry_run": False}) == (
        None,
        None,
        None,
        False,
    )


def test_values_are_passed_through_trimmed() -> None:
    assert run_params(
        {"window_start": " 2026-11-01 ", "window_end": "2026-11-02", "model_version": "3", "dry_run": True}
    ) == (
        "2026-11-01",
        "2026-11-02",
        "3",
        True,
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model_version": "../../etc/passwd"}, "must be a version number or an alias"),
        ({"model_version": "x; rm -rf /"}, "must be a version number or an alias"),
        ({"model_version": 3}, "must be a string"),
        ({"dry_run": "yes"}, "must be true or false"),
        ({"window_start": ["2026-11-01"]}, "must be a string"),
    ],
)
def test_hostile_params_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        run_params(params)


def test_connection_urls_quote_credentials_and_keep_other_warehouses() -> None:
    from airflow.models.connection import Connection

    from batchscore.airflow.glue import url_of

    pg = Connection(conn_id="x", conn_type="postgres", host="db", port=5432, login="u@x", password="p:/@ss", schema="w")
    assert url_of(pg) == "postgresql://u%40x:p%3A%2F%40ss@db:5432/w"
    other = Connection(conn_id="y", conn_type="generic", extra='{"sqlalchemy_url": "snowflake://acct/db"}')
    assert url_of(other) == "snowflake://acct/db"
    assert url_of(Connection(conn_id="z", conn_type="sqlite", host="/data/w.db")) == "sqlite:////data/w.db"


@pytest.mark.parametrize(
    ("execution", "slices", "cores", "expected"),
    [
        ({}, 1, 2, 2),  # one slice: every core of the worker
        ({}, 4, 2, 1),  # more slices than cores: one thread each
        ({}, 2, 8, 4),
        ({"parallel_slices": 2}, 8, 8, 4),  # at most 2 at once: 4 threads each
        ({"threads_per_slice": 3}, 8, 2, 3),  # set by hand for big workers
    ],
)
def test_slices_times_threads_never_exceed_the_cores(
    monkeypatch: pytest.MonkeyPatch, execution: dict, slices: int, cores: int, expected: int
) -> None:
    from pathlib import Path

    from batchscore.airflow.glue import slice_workers
    from batchscore.pipeline.config import load_config

    config = load_config(Path(__file__).resolve().parents[3] / "include" / "pipelines" / "churn.yaml")
    config = config.model_copy(update={"execution": config.execution.model_copy(update=execution)})
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert slice_workers(config, slices) == expected


@pytest.mark.parametrize(
    "error",
    [
        ParamError("param dry_run must be true or false"),
        WindowError("window_start '2026-10-01; drop table x' is not an ISO date-time"),
        ConfigError("churn.yaml: model: Field required"),
        RegistryError("model churn v9: artifact sha256 abc does not match its manifest"),
        PlanError("model churn v1 does not fit pipeline churn"),
        SchemaMismatch("source has no column tenure_days"),
        RejectThresholdExceeded("40 of 100 rows failed validation"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_no_retry_can_fix_fail_the_task_at_once(error: Exception) -> None:
    """Raised through the tasks' guard they become AirflowFailException (no retries), keeping cause and remedy."""
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as info, failing_fast():
        raise error
    assert str(info.value) == f"{type(error).__name__}: {error}"
    assert root_cause(info.value) is error
    assert remedy_of(info.value) == error.remedy  # type: ignore[attr-defined]
    assert not remedy_of(info.value).startswith("transient")


@pytest.mark.parametrize(
    "error", [ConnectionError("server closed the connection"), TimeoutError("lock timeout"), OSError("disk")]
)
def test_transient_errors_pass_through_to_be_retried(error: Exception) -> None:
    with pytest.raises(type(error)), failing_fast():
        raise error
    assert remedy_of(error).startswith("transient")


def test_one_line_joins_a_multi_line_error_and_caps_its_length() -> None:
    error = ConfigError("a.yaml: model: Field required\na.yaml: entity_key: Field required")
    assert one_line(error) == "ConfigError: a.yaml: model: Field required; a.yaml: entity_key: Field required"
    assert len(one_line(RuntimeError("x" * 2000))) == 500
    assert one_line(KeyError()) == "KeyError"


def test_an_mlflow_connection_becomes_a_tracking_uri_the_way_http_connections_do() -> None:
    from airflow.models.connection import Connection

    from batchscore.airflow.glue import tracking_uri_of

    assert tracking_uri_of(Connection(conn_id="m", conn_type="http", host="mlflow", port=5000)) == "http://mlflow:5000"
    assert tracking_uri_of(Connection(conn_id="m", conn_type="http", host="https://mlflow.example.com")) == (
        "https://mlflow.example.com"
    )
    assert tracking_uri_of(Connection(conn_id="m", conn_type="http", host="mlflow", schema="https")) == (
        "https://mlflow"
    )
    assert tracking_uri_of(Connection(conn_id="m", uri="http://127.0.0.1:5123")) == "http://127.0.0.1:5123"
    extra = Connection(conn_id="m", conn_type="http", extra='{"tracking_uri": "https://h/prefix/mlflow"}')
    assert tracking_uri_of(extra) == "https://h/prefix/mlflow"


@pytest.mark.parametrize(
    ("connection", "uri", "env"),
    [
        ('{"conn_type": "http", "host": "mlflow", "port": 5000}', "http://mlflow:5000", {}),
        (
            '{"conn_type": "http", "host": "https://m.example.com", "login": "token", "password": "t0k"}',
            "https://m.example.com",
            {"MLFLOW_TRACKING_TOKEN": "t0k"},
        ),
        (
            '{"conn_type": "http", "host": "m", "login": "ann", "password": "p@ss"}',
            "http://m",
            {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "p@ss"},
        ),
        (None, "http://from-env:5000", {}),  # no connection: MLflow's own variable
    ],
)
def test_mlflow_credentials_go_where_the_mlflow_client_reads_them_not_into_the_uri(
    monkeypatch: pytest.MonkeyPatch, connection: str | None, uri: str, env: dict[str, str]
) -> None:
    from batchscore.airflow.glue import mlflow_tracking_uri

    names = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    for name in names:
        monkeypatch.setenv(name, "unset")  # restored (removed) after the test, whatever the glue sets
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    if connection is None:
        monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_TEST", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", connection)
    assert mlflow_tracking_uri("mlflow_test") == uri
    assert {n: os.environ[n] for n in names if os.environ[n] != "unset"} == env


def test_allow_shrink_is_a_boolean_off_by_default() -> None:
    assert allow_shrink({}) is False
    assert allow_shrink({"allow_shrink": True}) is True
    with pytest.raises(ParamError, match="param allow_shrink must be true or false, got 'yes'"):
        allow_shrink({"allow_shrink": "yes"})


@dataclass(frozen=True)
class _DagRun:
    """The two fields of the Task SDK's DagRun that window_from_context reads."""

    run_type: DagRunType
    run_after: datetime


@pytest.mark.parametrize(("run_type", "own_interval"), [(DagRunType.BACKFILL, True), (DagRunType.MANUAL, False)])
def test_a_backfill_run_scores_its_own_interval_whatever_its_conf_says(
    run_type: DagRunType, own_interval: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``airflow backfill create --dag-run-conf`` hands every run of the backfill the same window: ignored there."""
    config = load_config(REPO / "include" / "pipelines" / "churn.yaml")
    interval = Window(datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC))
    context = {
        "params": {"window_start": "2026-10-01T00:00:00Z", "window_end": "2026-10-02T00:00:00Z"},
        "dag_run": _DagRun(run_type, datetime(2026, 10, 6, 1, tzinfo=UTC)),
        "run_id": "backfill__2026-10-05T00:00:00+00:00",
        "data_interval_start": interval.start,
        "data_interval_end": interval.end,
    }
    with caplog.at_level(logging.WARNING, logger="batchscore.airflow.glue"):
        window = window_from_context(config, context)
    asked = Window(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))
    assert window == (interval if own_interval else asked)
    assert ("is a backfill run, which scores its own data interval" in caplog.text) is own_interval
