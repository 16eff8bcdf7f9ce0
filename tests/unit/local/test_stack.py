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


def test_stop_services_asks_every_service_at_once(tmp_path: Path) -> None:
    """Two services that take 2 s each to exit on SIGTERM stop together in about 2 s, not one after the other."""
    import subprocess
    import sys
    import time

    from batchscore.local.services import _alive
    from batchscore.local.stack import LocalStack

    stack = LocalStack(root=tmp_path, external_url="postgresql://u@/db?host=/nowhere")
    stack.home.mkdir(parents=True)
    procs = []
    for service in ("api-server", "scheduler"):
        ready, done = tmp_path / f"{service}.ready", tmp_path / f"{service}.terminated"
        script = (
            "import signal, sys, time\n"
            f"def bye(*_):\n    time.sleep(2)\n    open({str(done)!r}, 'w').close()\n    sys.exit(0)\n"
            f"signal.signal(signal.SIGTERM, bye)\nopen({str(ready)!r}, 'w').close()\ntime.sleep(120)\n"
        )
        procs.append(subprocess.Popen([sys.executable, "-c", script], start_new_session=True))
        (stack.home / f"{service}.pid").write_text(str(procs[-1].pid))
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:  # its handler is in place
            time.sleep(0.05)
    began = time.monotonic()
    stack.stop_services()
    took = time.monotonic() - began
    assert not any(_alive(p.pid) for p in procs)
    assert sorted(p.name for p in tmp_path.glob("*.terminated")) == ["api-server.terminated", "scheduler.terminated"]
    assert 2.0 <= took < 3.9, f"stopped in {took:.1f}s: one after the other takes 4 s or more"
    assert not list(stack.home.glob("*.pid"))
