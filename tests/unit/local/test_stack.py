"""The local stack refuses a taken port with a clear line, before touching anything."""

from pathlib import Path

import pytest


def test_a_taken_port_is_named_with_the_setting_that_changes_it(tmp_path: Path) -> None:
    import socket

    from batchscore.local.embedded_pg import EmbeddedPostgres, free_ports

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"127.0.0.1:{port}: the port is in use.*BATCHSCORE_PG_PORT"):
            EmbeddedPostgres(tmp_path / "pgdata", port=port).start()
    assert not (tmp_path / "pgdata").exists(), "nothing is initialised before the port is known to be free"
    first, second = free_ports(2)
    assert first != second


def test_airflow_overrides_win_over_the_stacks_own_settings_and_the_default_stack_has_none(tmp_path: Path) -> None:
    from batchscore.local.stack import LocalStack

    interval = "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"
    plain = LocalStack(root=tmp_path, external_url="postgresql://u@/db?host=/nowhere")
    assert plain.airflow_overrides == {}
    assert plain.env()[interval] == "10"
    tuned = LocalStack(
        root=tmp_path,
        external_url="postgresql://u@/db?host=/nowhere",
        airflow_overrides={interval: "60", "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2"},
    )
    env = tuned.env()
    assert (env[interval], env["AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL"]) == ("60", "2")
    assert {k: v for k, v in env.items() if k not in tuned.airflow_overrides} == {
        k: v for k, v in plain.env().items() if k != interval
    }, "nothing else changes"
