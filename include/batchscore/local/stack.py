"""The local stack: embedded PostgreSQL plus Airflow 3 services, for the demo, the UI and the tests.

One PostgreSQL server (from the pip-installed binaries) holds three databases: ``airflow``
(metadata), ``warehouse`` (the demo source) and ``scores``. Setting ``BATCHSCORE_PG_URL``
points all three roles at an existing PostgreSQL database instead and starts nothing.
Airflow runs as separate processes (api-server, scheduler, dag-processor, triggerer) with the
LocalExecutor, exactly as in production minus Celery.

Every listener of the stack is on 127.0.0.1 (PostgreSQL also on a Unix socket in its data
directory): the api-server gets ``--host``, and the task-log server is Airflow's own app served
here on 127.0.0.1, because Airflow's built-in one (in the scheduler, triggerer and Celery
workers) binds every interface and has no setting to change that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from batchscore import settings
from batchscore.local.airflow_settings import airflow_settings
from batchscore.local.embedded_pg import DEFAULT_PORT, EmbeddedPostgres, port_in_use

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
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
WARM_START = "batchscore.airflow.warm_start"
LOOPBACK = "127.0.0.1"
# Airflow's task-log server (JWT-checked static files of [logging] base_log_folder), as an ASGI factory.
LOG_SERVER_APP = "airflow.utils.serve_logs.log_server:get_app"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"  # local stack only; never used by docker-compose


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


@dataclass
class LocalStack:
    """Paths, ports and the database of one local Airflow installation."""

    root: Path = field(default_factory=lambda: settings.LOCAL_DIR)
    pg_port: int = int(os.environ.get("BATCHSCORE_PG_PORT", str(DEFAULT_PORT)))
    api_port: int = int(os.environ.get("BATCHSCORE_API_PORT", "8080"))
    log_port: int = int(os.environ.get("BATCHSCORE_LOG_PORT", "8793"))  # task logs, read by the api-server
    external_url: str | None = field(default_factory=lambda: os.environ.get("BATCHSCORE_PG_URL") or None)
    pg_settings: dict[str, str] = field(default_factory=dict)
    parallelism: int = 4
    dags_dir: Path = field(default_factory=lambda: settings.PROJECT_ROOT / "dags")
    name: str = "airflow"  # AIRFLOW_HOME's folder under root and the metadata database's name
    executor: str = "LocalExecutor"
    broker_url: str | None = None  # CeleryExecutor: the Redis broker
    heartbeat_timeout: int | None = None  # seconds before a task whose worker vanished is failed (and retried)
    auth_manager: str = SIMPLE_AUTH_MANAGER  # FAB_AUTH_MANAGER: users and roles in the metadata database
    # SimpleAuthManager: more people who may log in, name -> (role, password): e.g. a reviewer (role
    # "user") who answers promotion requests, so the approver recorded is not the admin.
    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES  # what start_services starts (a subset of SERVICES)
    # Airflow settings applied over the stack's own (AIRFLOW__SECTION__KEY -> value): the tests'
    # shorter housekeeping intervals. The demo and `batchscore airflow up` set none.
    airflow_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / self.name

    @property
    def pg(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.root / "pgdata", port=self.pg_port, settings=self.pg_settings)

    def database_url(self, role: str) -> str:
        """URL of the ``airflow``, ``warehouse`` or ``scores`` database."""
        if self.external_url:
            return self.external_url
        return self.pg.url(self.name if role == "airflow" else role)

    def start_database(self) -> None:
        """Start the embedded server (unless an external one is configured) and create the databases."""
        if self.external_url:
            return
        pg = self.pg.start()
        for name in (self.name, "warehouse", "scores"):
            pg.ensure_database(name)

    def _secret(self, name: str) -> str:
        path = self.home / f".{name}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """Environment for every Airflow process of this stack (and the CLI's ``airflow`` calls)."""
        from batchscore.db import libpq_url

        self.home.mkdir(parents=True, exist_ok=True)
        metadata = libpq_url(self.database_url("airflow")).replace("postgresql://", "postgresql+psycopg2://", 1)
        api = f"http://127.0.0.1:{self.api_port}"
        extra: dict[str, str] = {}
        if self.executor == "CeleryExecutor":
            if not self.broker_url:
                raise ValueError("CeleryExecutor needs a broker_url (redis://host:port/0)")
            extra |= {
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata.replace("+psycopg2", "", 1),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                # Each worker imports the scoring stack once, before it forks its pool (airflow/celery_config.py).
                "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "batchscore.airflow.celery_config.CELERY_CONFIG",
            }
        if self.heartbeat_timeout:
            extra["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(self.heartbeat_timeout)
        if self.auth_manager == SIMPLE_AUTH_MANAGER:
            passwords = self.home / "passwords.json"
            passwords.write_text(
                json.dumps({ADMIN_USER: ADMIN_PASSWORD} | {n: pw for n, (_, pw) in self.users.items()})
            )
            extra |= {
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    [f"{ADMIN_USER}:admin", *(f"{n}:{role}" for n, (role, _) in self.users.items())]
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            }
        own = extra | {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "batchscore.settings.host_name",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
            "AIRFLOW__CORE__AUTH_MANAGER": self.auth_manager,
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": LOOPBACK,
            "AIRFLOW__CELERY__FLOWER_HOST": LOOPBACK,
            # Where the api-server fetches a running task's log (and a deferred one's, from the triggerer).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # LocalExecutor's workers fork from a server that imported the scoring stack once (airflow/warm_start.py).
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": WARM_START,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_WAREHOUSE_DB": self.database_url("warehouse"),
            "AIRFLOW_CONN_SCORES_DB": self.database_url("scores"),
            "BATCHSCORE_MODEL_REGISTRY": os.environ.get("BATCHSCORE_MODEL_REGISTRY", str(self.root / "registry")),
            "NO_PROXY": "*",
            "no_proxy": "*",
        }
        return own | airflow_settings() | self.airflow_overrides

    def airflow(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against this stack."""
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        done = subprocess.run(
            [airflow_bin, *args], env={**os.environ, **self.env()}, check=False, text=True, capture_output=capture
        )
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout or "")[-2000:] if capture else ""
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}\n{detail}")
        return done

    def backfill(self, dag_id: str, first: date, last: date, *options: str) -> None:
        """``airflow backfill create`` for the windows whose logical dates fall in [first, last]."""
        self.airflow(
            "backfill",
            "create",
            "--dag-id",
            dag_id,
            "--from-date",
            first.isoformat(),
            "--to-date",
            last.isoformat(),
            *options,
            capture=True,
        )

    def migrate(self) -> None:
        self.start_database()
        self.airflow("db", "migrate", capture=True)

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

    def stop(self) -> None:
        self.stop_services()
        if not self.external_url:
            self.pg.stop()


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
