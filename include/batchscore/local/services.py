"""The local stack's processes: starting Airflow's services and Celery workers, stopping them, their pid files.

Each service runs in a session of its own (``start_new_session``), so stopping or killing one
reaches its whole process group: the task processes a scheduler or a worker forked go with it.
A pid file per service under the stack's AIRFLOW_HOME is how a later command (``make stop``,
a test's teardown) finds what an earlier one started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batchscore import settings
from batchscore.local.embedded_pg import port_in_use

logger = logging.getLogger(__name__)
# The triggerer: the UI's health panel shows it. The log server: task logs in the UI, on 127.0.0.1.
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "log-server")
# What the API's health endpoint calls each service it reports on (the api-server: its metadatabase).
HEALTH_PART = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
LOOPBACK = "127.0.0.1"
# Airflow's task-log server (JWT-checked static files of [logging] base_log_folder), as an ASGI factory.
LOG_SERVER_APP = "airflow.utils.serve_logs.log_server:get_app"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


class ServiceProcesses:
    """Start, watch and stop one stack's Airflow processes; :class:`~batchscore.local.stack.LocalStack` is one.

    What it needs of the stack: where it lives (``root``, ``name``), its ports, which services
    it runs and the environment every Airflow process gets (``env()``).
    """

    root: Path
    name: str
    api_port: int
    log_port: int
    dags_dir: Path
    services: tuple[str, ...]

    @property
    def home(self) -> Path:
        return self.root / self.name

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def _pidfile(self, service: str) -> Path:
        return self.home / f"{service}.pid"

    def running(self, service: str) -> bool:
        pidfile = self._pidfile(service)
        if not pidfile.exists():
            return False
        try:
            return _alive(int(pidfile.read_text()))
        except ValueError:
            return False

    def service_command(self, service: str) -> list[str]:
        """The command line of one of :data:`SERVICES`; whatever it listens on is 127.0.0.1.

        The scheduler and the triggerer skip Airflow's log server (it would bind every interface);
        the ``log-server`` service serves the same folder, on 127.0.0.1:``log_port``.
        """
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        if service == "api-server":
            return [airflow_bin, service, "--host", LOOPBACK, "--port", str(self.api_port), "--workers", "1"]
        if service == "log-server":
            return [
                *(sys.executable, "-m", "uvicorn", "--factory", LOG_SERVER_APP),
                *("--host", LOOPBACK, "--port", str(self.log_port), "--no-access-log"),
            ]
        if service in ("scheduler", "triggerer"):
            return [airflow_bin, service, "--skip-serve-logs"]
        return [airflow_bin, service]

    def start_services(self, timeout: float = 180) -> None:
        """Write the pipelines' DAG files, start the Airflow services in the background; wait until healthy."""
        from batchscore.airflow.dag_files import sync

        synced = sync(settings.pipelines_dir(), self.dags_dir)
        if synced.written or synced.removed:
            logger.info("DAG files: wrote %s, removed %s", list(synced.written), list(synced.removed))
        for service, port, setting in (
            ("api-server", self.api_port, "BATCHSCORE_API_PORT"),
            ("log-server", self.log_port, "BATCHSCORE_LOG_PORT"),
        ):
            if service in self.services and not self.running(service) and port_in_use(port):
                raise RuntimeError(
                    f"cannot start the Airflow {service} on port {port}: the port is in use; stop what "
                    f"listens there or choose another port with {setting}=<port>"
                )
        env = {**os.environ, **self.env()}
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        for service in self.services:
            if self.running(service):
                continue
            log = (self.home / "logs" / f"{service}.log").open("ab")
            proc = subprocess.Popen(
                self.service_command(service), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            self._pidfile(service).write_text(str(proc.pid))
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for service in self.services:
                if not self.running(service):
                    raise RuntimeError(f"airflow {service} exited; see {self.home / 'logs' / (service + '.log')}")
            try:
                last = requests.get(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=5).json()
                parts = [HEALTH_PART[service] for service in self.services if service in HEALTH_PART]
                if all(last.get(part, {}).get("status") == "healthy" for part in parts):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"Airflow did not become healthy in {timeout:.0f}s (last health: {last})")

    def start_worker(self, hostname: str) -> Path:
        """Start ``airflow celery worker`` as ``hostname``, in a working directory of its own; returns it.

        Nothing of a task's data passes through this directory (tasks hand over through the
        databases): it holds the worker's own logs. The worker runs no log server (Airflow's
        binds every interface, and the api-server would look for it at the worker's name, which
        names no host here): read a task's log from this folder.
        """
        workdir = self.root / f"{self.name}-worker-{hostname}"
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env(),
            "AIRFLOW_HOME": str(workdir),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(workdir / "logs"),
            "BATCHSCORE_WORKER_NAME": hostname,
        }
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        args = [airflow_bin, "celery", "worker", "--celery-hostname", f"{hostname}@%h", "--concurrency", "1"]
        args += ["--skip-serve-logs"]
        log = (workdir / "worker.log").open("ab")
        proc = subprocess.Popen(
            args, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._pidfile(f"worker-{hostname}").write_text(str(proc.pid))
        return workdir

    def kill_worker(self, hostname: str) -> None:
        """SIGKILL a worker's whole process group, as a lost machine would vanish."""
        self.kill(f"worker-{hostname}")

    def kill(self, service: str) -> None:
        """SIGKILL a service's whole process group (``scheduler``, ``worker-<name>``), as a crash would."""
        pidfile = self._pidfile(service)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    def stop_services(self) -> None:
        """Stop the Airflow services and workers this stack started (their whole process groups).

        All are asked at once (SIGTERM), so their graceful exits overlap; any still running
        20 s later is killed (SIGKILL) and waited for as long again.
        """
        workers = [p.stem for p in self.home.glob("worker-*.pid")] if self.home.exists() else []
        pidfiles = [self._pidfile(service) for service in (*SERVICES, *workers)]
        pids = {path: int(path.read_text()) for path in pidfiles if path.exists()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
            for _ in range(100):
                if not any(_alive(pid) for pid in pids.values()):
                    break
                time.sleep(0.2)
        for path in pids:
            path.unlink(missing_ok=True)


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A Redis server on 127.0.0.1:``port`` for the Celery broker (Debian's ``redis-server``), no persistence.

    Waits until it answers; the caller terminates it.
    """
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("CeleryExecutor needs redis-server: sudo apt-get install redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=(folder / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not port_in_use(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}; see {folder / 'redis.log'}")
        time.sleep(0.1)
    return proc


def group_cpu_seconds(leader: int) -> float:
    """CPU seconds used so far by the process group of ``leader`` (a worker and the task processes it ran)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) != leader:
                continue
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total
