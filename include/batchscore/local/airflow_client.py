"""A small client of Airflow's REST API v2, for the demo, the CLI's stack commands and the e2e tests.

It logs in the way SimpleAuthManager and FAB both accept (``/auth/token``), never reads proxy
settings from the environment (the stack is on loopback), and waits for DAGs and runs with
polls that tolerate a busy api-server.
"""

from __future__ import annotations

import time
from typing import Any

from batchscore.local.stack import ADMIN_PASSWORD, ADMIN_USER


class AirflowClient:
    """A minimal REST API v2 client with a bearer token (SimpleAuthManager login)."""

    def __init__(self, base: str, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
        import requests

        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        reply = self.session.post(
            f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        reply.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def get(self, path: str, **params: Any) -> Any:
        reply = self.session.get(f"{self.base}/api/v2{path}", params=params, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        reply = self.session.request(method, f"{self.base}/api/v2{path}", json=body, timeout=30)
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {reply.status_code}: {reply.text[:500]}")
        return reply.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get(f"/dags/{dag_id}")
                return
            except (requests.HTTPError, requests.Timeout):  # not parsed yet, or a busy api-server: poll again
                time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f}s")

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="-run_after")["dag_runs"])

    def wait_for_runs(
        self, dag_id: str, run_ids: set[str], timeout: float = 600, poll: float = 1.0, *, allow_failed: bool = False
    ) -> list[dict[str, Any]]:
        """Wait until every run in ``run_ids`` has finished (checked every ``poll`` seconds).

        Raises if any failed, unless ``allow_failed``. A poll the API server is too busy to answer
        in time (a loaded machine, tasks starting) is only a missed poll: the next one follows.
        """
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                listed = self.dag_runs(dag_id)
            except requests.Timeout:
                continue
            runs = {r["dag_run_id"]: r for r in listed if r["dag_run_id"] in run_ids}
            if len(runs) == len(run_ids) and all(r["state"] in ("success", "failed") for r in runs.values()):
                failed = [rid for rid, r in runs.items() if r["state"] == "failed"]
                if failed and not allow_failed:
                    raise RuntimeError(f"runs failed: {failed}; see the task logs in the UI")
                return list(runs.values())
            time.sleep(poll)
        raise TimeoutError(f"runs {sorted(run_ids)} of {dag_id} did not finish within {timeout:.0f}s")
