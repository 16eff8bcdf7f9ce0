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
