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
