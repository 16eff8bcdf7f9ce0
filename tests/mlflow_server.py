"""A real MLflow tracking server for the tests, run from a virtualenv of its own.

The server's pins (full ``mlflow``, Flask, gunicorn...) are not the project's: the project
locks only the client (``mlflow-skinny``). The server's virtualenv is built from
``requirements-mlflow-server.lock`` by uv on first use and cached under
``.venv/share/mlflow-server/<the lock's sha256>``, so a fresh clone's ``make test`` builds it
once and a changed pin builds a new one. The server keeps its runs and registry in SQLite
and its artifacts in a local folder (``artifacts``), which tests may tamper with.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-mlflow-server.lock"
STARTUP_SECONDS = 180


def server_venv() -> Path:
    """The server's virtualenv, built when missing (under a file lock: two sessions may start at once)."""
    key = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    cache = Path(sys.prefix) / "share" / "mlflow-server"
    home = cache / key
    if (home / ".installed").exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".installed").exists():
            return home
        for stale in cache.iterdir():  # virtualenvs of earlier pins
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv is None:
            raise RuntimeError("the MLflow server's virtualenv needs uv (make install puts it in .venv/bin)")
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(home)], check=True)
        subprocess.run(
            [uv, "pip", "sync", "-q", "--compile-bytecode", "--python", str(home / "bin" / "python"), str(LOCK)],
            check=True,
        )
        (home / ".installed").touch()
    return home


@dataclass
class MlflowServer:
    """A running server: its URI, the folder holding its artifacts, its process."""

    uri: str
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path

    def wait(self, seconds: float = STARTUP_SECONDS) -> MlflowServer:
        """Return once the server answers (15-40 s after start here: imports, then its SQLite migrations)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {seconds:.0f}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(root: Path, port: int) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1:``port`` with its stores under ``root``; see :meth:`MlflowServer.wait`."""
    venv = server_venv()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,  # its own process group: stop() ends the workers too
        )
    return MlflowServer(f"http://127.0.0.1:{port}", root / "artifacts", process, log)
