"""A second api-server, with the FAB auth manager and per-DAG roles, for the permission tests.

The session's main stack runs SimpleAuthManager (roles only: a viewer reads every DAG). This
one is its own Airflow installation on the same embedded PostgreSQL: its own metadata database
(``airflow_fab``: FAB adds its user and permission tables), its own AIRFLOW_HOME and port, the
same DAG files, plugin and scores database. Only the api-server runs: the Scoring view and the
trigger guard answer from it, and no run needs scheduling. Users and roles are made with FAB's
own CLI (``airflow roles import``, ``airflow users create``), as an operator would.

Users (password = name + "-pw"):

- ``admin``: FAB's Admin role;
- ``churn``: reads DAG ``score_churn`` and its runs (``DAG:score_churn``, ``DAG Run:score_churn``);
- ``churn_logs``: the same, and the task logs (``Task Logs``): may read rejected values;
- ``nobody``: a role with no permission on any DAG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from batchscore.local.airflow_client import AirflowClient
from batchscore.local.embedded_pg import free_ports
from batchscore.local.stack import FAB_AUTH_MANAGER, LocalStack

USERS = {"admin": "Admin", "churn": "churn_reader", "churn_logs": "churn_logs", "nobody": "no_dags"}
ROLES = [
    {"name": "churn_reader", "resource": "DAG:score_churn", "action": "can_read"},
    {"name": "churn_reader", "resource": "DAG Run:score_churn", "action": "can_read"},
    {"name": "churn_logs", "resource": "DAG:score_churn", "action": "can_read"},
    {"name": "churn_logs", "resource": "DAG Run:score_churn", "action": "can_read"},
    {"name": "churn_logs", "resource": "Task Logs", "action": "can_read"},
    {"name": "no_dags"},
]

# Runs the ``airflow`` CLI commands given as JSON argument lists in one interpreter: each command
# is parsed and dispatched by Airflow's own CLI parser, as `airflow ...` would, without paying
# Airflow's import time (about 7 s here) once per command.
_CLI_BATCH = """
import json, sys
from airflow.cli import cli_parser
parser = cli_parser.get_parser()
for argv in json.loads(sys.argv[1]):
    args = parser.parse_args(argv)
    args.func(args)
"""


def password(user: str) -> str:
    return f"{user}-pw"


@dataclass(frozen=True)
class FabApi:
    stack: LocalStack

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.stack.api_port}"

    def login(self, user: str) -> AirflowClient:
        """A session with a token from a real login (``POST /auth/token``, FAB checks the password)."""
        return AirflowClient(self.base, user, password(user))


def _create_user(user: str, role: str) -> list[str]:
    names = ["-f", user, "-l", "test", "-e", f"{user}@example.com"]
    return ["users", "create", "-u", user, "-p", password(user), "-r", role, *names]


def fab_stack(main: LocalStack) -> LocalStack:
    """The FAB installation beside ``main``: same server, DAG files and scores database; its own metadata."""
    api_port, log_port = free_ports(2)  # no log server runs; its port is kept off the main stack's
    return LocalStack(
        root=main.root,
        pg_port=main.pg_port,
        api_port=api_port,
        log_port=log_port,
        external_url=main.external_url,
        pg_settings=main.pg_settings,
        dags_dir=main.dags_dir,
        name="airflow_fab",
        auth_manager=FAB_AUTH_MANAGER,
        services=("api-server",),
        airflow_overrides=main.airflow_overrides,
    )


def prepare(stack: LocalStack) -> None:
    """Metadata schema (core and FAB), the DAGs parsed into it (FAB makes their per-DAG permissions), roles, users."""
    stack.start_database()
    env = {**os.environ, **stack.env()}  # makes its AIRFLOW_HOME
    roles = stack.home / "roles.json"
    roles.write_text(json.dumps(ROLES))
    commands = [
        ["db", "migrate"],
        ["dags", "reserialize"],
        ["roles", "import", str(roles)],
        *(_create_user(user, role) for user, role in USERS.items()),
    ]
    log = stack.home / "setup.log"
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-c", _CLI_BATCH, json.dumps(commands)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"setting up the FAB api-server failed; see {log}:\n{log.read_text()[-3000:]}")


def start(main: LocalStack) -> FabApi:
    stack = fab_stack(main)
    prepare(stack)
    stack.start_services(timeout=300)
    return FabApi(stack)
