"""deploy/helm/values.yaml against the keys and shapes the official Airflow chart documents.

The chart's values schema is not shipped in any Python package, so the keys used here are
checked against what the chart's values.yaml and values.schema.json declare (draft-07: nested
objects allow no unknown keys, env items are {name, value} strings, secret items are
{envName, secretName, secretKey}), and the versions against the project's lock.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
VALUES = REPO / "deploy" / "helm" / "values.yaml"
# Top-level keys and, where this file goes deeper, the nested keys the chart declares for them.
CHART_KEYS: dict[str, set[str] | None] = {
    "executor": None,
    "airflowVersion": None,
    "defaultAirflowRepository": None,
    "defaultAirflowTag": None,
    "images": {"airflow"},
    "dags": {"persistence", "gitSync"},
    "env": None,
    "secret": None,
    "data": {"metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName", "metadataConnection"},
    "fernetKeySecretName": None,
    "apiSecretKeySecretName": None,
    "jwtSecretName": None,
    "config": None,
    "workers": {"replicas", "resources", "persistence", "keda"},
    "scheduler": {"replicas", "enabled"},
    "dagProcessor": {"enabled", "replicas"},
    "triggerer": {"enabled", "replicas"},
    "apiServer": {"enabled", "replicas"},
    "redis": {"enabled"},
    "postgresql": {"enabled"},
    "migrateDatabaseJob": {"enabled"},
    "createUserJob": {"enabled"},
}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def locked_airflow_version() -> str:
    match = re.search(r"^apache-airflow==([\d.]+)$", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert match
    return match.group(1)


def test_only_keys_the_chart_declares(values: dict[str, Any]) -> None:
    assert set(values) <= set(CHART_KEYS), sorted(set(values) - set(CHART_KEYS))
    for key, nested in CHART_KEYS.items():
        if nested is not None and key in values:
            assert set(values[key]) <= nested, f"{key}: {sorted(set(values[key]) - nested)}"
    assert set(values["images"]["airflow"]) <= {"repository", "tag", "digest", "pullPolicy"}
    assert values["images"]["airflow"]["pullPolicy"] in {"Always", "Never", "IfNotPresent"}


def test_versions_agree_with_the_lock_and_the_dockerfile(values: dict[str, Any]) -> None:
    version = locked_airflow_version()
    assert values["airflowVersion"] == version
    assert values["images"]["airflow"]["tag"].startswith(version)
    assert values["defaultAirflowTag"].startswith(version)
    assert f"apache/airflow:{version}" in (REPO / "Dockerfile").read_text()


def test_celery_with_code_in_the_image_and_no_shared_disk(values: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Z][A-Za-z]+Executor", values["executor"])
    assert values["executor"] == "CeleryExecutor"
    assert values["dags"]["persistence"]["enabled"] is False
    assert values["dags"]["gitSync"]["enabled"] is False
    assert values["workers"]["persistence"]["enabled"] is False
    assert values["dagProcessor"]["enabled"] is True


def test_env_and_secret_items_have_the_chart_shapes(values: dict[str, Any]) -> None:
    for item in values["env"]:
        assert set(item) == {"name", "value"}
        assert isinstance(item["value"], str), f"{item['name']}: the chart wants strings"
    for item in values["secret"]:
        assert set(item) <= {"envName", "secretName", "secretKey"}
        assert {"envName", "secretName"} <= set(item)
    from_secrets = {item["envName"] for item in values["secret"]}
    assert {"AIRFLOW_CONN_WAREHOUSE_DB", "AIRFLOW_CONN_SCORES_DB", "BATCHSCORE_MODEL_REGISTRY"} <= from_secrets


def test_no_secret_in_the_file(values: dict[str, Any]) -> None:
    text = VALUES.read_text()
    assert not re.search(r"^\s*(fernetKey|jwtSecret|apiSecretKey|webserverSecretKey):", text, re.MULTILINE)
    assert "metadataConnection" not in values.get("data", {})
    for section in values["config"].values():
        for key, value in section.items():
            assert isinstance(value, (bool, int, float, str))
            assert not re.search(r"password|secret|://[^/@]+:[^/@]+@", f"{key}={value}", re.IGNORECASE)
    for item in values["env"]:  # a secret goes in `secret:` (from a Kubernetes secret), never in `env:`
        assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|_CONN_", item["name"]), item["name"]
        assert not re.search(r"://[^/@]+:[^/@]+@", item["value"]), item["name"]


def _nodes(node: Any) -> list[dict[str, Any]]:
    """Every mapping in ``node``, at any depth."""
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in _nodes(value))]
    if isinstance(node, list):
        return [found for item in node for found in _nodes(item)]
    return []


def test_nothing_is_exposed_beyond_the_cluster(values: dict[str, Any]) -> None:
    """The chart's services stay ClusterIP and no ingress is made: opening the UI is the operator's choice."""
    mappings = _nodes(values)
    assert [m for m in mappings if "ingress" in m] == []
    assert [m["service"] for m in mappings if isinstance(m.get("service"), dict) and "type" in m["service"]] == []


def test_simple_auth_manager_needs_no_fab_user_job(values: dict[str, Any]) -> None:
    if values["config"]["core"]["auth_manager"].endswith("SimpleAuthManager"):
        assert values["createUserJob"]["enabled"] is False
