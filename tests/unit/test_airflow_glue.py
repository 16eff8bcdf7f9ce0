import pytest

from batchscore.airflow_glue import ParamError, run_params


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

    from batchscore.airflow_glue import url_of

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

    from batchscore.airflow_glue import slice_workers
    from batchscore.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "include" / "pipelines" / "churn.yaml")
    config = config.model_copy(update={"execution": config.execution.model_copy(update=execution)})
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert slice_workers(config, slices) == expected
