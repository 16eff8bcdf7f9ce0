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

import json
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from batchscore import settings
from batchscore.local.airflow_settings import airflow_settings
from batchscore.local.embedded_pg import DEFAULT_PORT, EmbeddedPostgres
from batchscore.local.services import LOOPBACK, SERVICES, ServiceProcesses

logger = logging.getLogger(__name__)
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
WARM_START = "batchscore.airflow.warm_start"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"  # local stack only; never used by docker-compose


@dataclass
class LocalStack(ServiceProcesses):
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

    def stop(self) -> None:
        self.stop_services()
        if not self.external_url:
            self.pg.stop()
