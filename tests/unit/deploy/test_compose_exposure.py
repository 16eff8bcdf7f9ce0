"""docker-compose.yaml is closed by default: ports on 127.0.0.1, and no secret without .env.

Every secret is ``${NAME:?...}`` (Compose stops when it is unset or empty: no working default
exists), every published port names its host address (127.0.0.1 unless ``BATCHSCORE_BIND``
opens it), and what ``make env`` writes satisfies every variable the file requires.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchscore.cli.compose_env import SECRETS, render
from tests.unit.deploy.compose_file import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    TOKEN,
    MissingVariable,
    compose_schema,
    env_of,
    interpolate,
    interpolate_all,
    iter_env_items,
    parse_env_file,
    required,
)

TEXT = COMPOSE_FILE.read_text()
# What `make env` writes, and the same with only the secrets (every other setting at the file's default).
ENV = parse_env_file(render(ENV_EXAMPLE.read_text(), uid=1000))
SECRETS_ONLY = {name: ENV[name] for name in SECRETS}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|_AUTH$")
URI_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>\$\{[^}]*\}|[^@\s]+)@")
REQUIRED_REF = re.compile(r"\$\{[A-Z0-9_]+:\?[^}]+\}")
PUBLISHING = {"airflow-apiserver", "warehouse-db", "scores-db", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(TEXT)


# --------------------------------------------------------------------------- secrets


def test_every_secret_is_required_from_env_with_no_default() -> None:
    uses = [(m.group("name"), m.group("op")) for m in TOKEN.finditer(TEXT) if m.group("name")]
    secret_uses = [(name, op) for name, op in uses if SECRET_NAME.search(name)]
    assert [use for use in secret_uses if use[1] != ":?"] == []
    assert {name for name, _ in secret_uses} == set(SECRETS), "the file's secrets are the ones make env writes"


def test_secret_settings_are_required_references(compose: dict[str, Any]) -> None:
    checked = set()
    for where, key, value in iter_env_items(compose):
        # A *_FILE setting names where a secret lives, it is not the secret itself.
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            checked.add(key)
            secret = value.split(":", 1)[1] if key.endswith("_BASIC_AUTH") else value  # user:password
            assert REQUIRED_REF.fullmatch(secret), f"{where}: {key} is not taken from .env: {value!r}"
    assert {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CELERY__FLOWER_BASIC_AUTH",
    } <= checked


def test_passwords_inside_uris_are_required_references(compose: dict[str, Any]) -> None:
    checked = set()
    for where, key, value in iter_env_items(compose):
        match = URI_WITH_PASSWORD.match(value)
        if match:
            checked.add(key)
            assert REQUIRED_REF.fullmatch(match.group("password")), f"{where}: {key} embeds a literal password"
    assert {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW_CONN_WAREHOUSE_DB",
        "AIRFLOW_CONN_SCORES_DB",
    } <= checked


def test_compose_refuses_the_file_without_env(compose: dict[str, Any]) -> None:
    with pytest.raises(
        MissingVariable, match=r"required variable \w+ is missing a value: set it in \.env \(make env\)"
    ):
        interpolate_all(compose, {})
    for name in SECRETS:
        for value in ({}, {name: ""}):  # unset, or set to nothing
            with pytest.raises(MissingVariable) as refused:
                interpolate_all(compose, {**{k: v for k, v in ENV.items() if k != name}, **value})
            assert refused.value.name == name


def test_env_example_holds_no_secret_and_copied_as_is_is_refused(compose: dict[str, Any]) -> None:
    example = parse_env_file(ENV_EXAMPLE.read_text())
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    with pytest.raises(MissingVariable):
        interpolate_all(compose, example)


def test_make_env_satisfies_every_required_variable_and_the_result_is_a_valid_file(compose: dict[str, Any]) -> None:
    import jsonschema

    assert required(TEXT) == set(SECRETS)
    assert all(ENV[name] for name in required(TEXT))
    resolved = interpolate_all(compose, ENV)
    errors = list(jsonschema.Draft7Validator(compose_schema()).iter_errors(resolved))
    assert errors == []
    assert (
        env_of(resolved["services"]["airflow-apiserver"])["AIRFLOW__API_AUTH__JWT_SECRET"] == ENV["AIRFLOW_JWT_SECRET"]
    )


# --------------------------------------------------------------------------- network


def published(compose: dict[str, Any], environ: dict[str, str]) -> dict[str, list[tuple[str, str, str]]]:
    """service -> (host address, host port, container port) of each published port, as Compose reads it."""
    result: dict[str, list[tuple[str, str, str]]] = {}
    for name, service in interpolate_all(compose, environ)["services"].items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):  # the long syntax
                entry = (str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"]))
            else:  # [host_ip:][host_port:]container_port
                host_ip, host_port, target = ["", "", *str(port).rsplit(":", 2)][-3:]
                entry = (host_ip, host_port, target)
            result.setdefault(name, []).append(entry)
    return result


def test_every_published_port_names_its_host_address_127_0_0_1_by_default(compose: dict[str, Any]) -> None:
    ports = published(compose, SECRETS_ONLY)
    assert set(ports) == PUBLISHING, "Redis, the metadata database and the Airflow workers publish nothing"
    assert ports == {
        "airflow-apiserver": [("127.0.0.1", "8080", "8080")],
        "warehouse-db": [("127.0.0.1", "5433", "5432")],
        "scores-db": [("127.0.0.1", "5434", "5432")],
        "flower": [("127.0.0.1", "5555", "5555")],
    }
    assert published(compose, ENV) == ports, "make env keeps them on 127.0.0.1"


def test_one_variable_opens_every_published_port(compose: dict[str, Any]) -> None:
    opened = published(compose, {**SECRETS_ONLY, "BATCHSCORE_BIND": "0.0.0.0"})
    assert {entry[0] for entries in opened.values() for entry in entries} == {"0.0.0.0"}
    raw = [str(port) for service in compose["services"].values() for port in service.get("ports") or []]
    assert all(port.startswith("${BATCHSCORE_BIND:-127.0.0.1}:") for port in raw), raw


# --------------------------------------------------------------------------- services that hold a secret


def _init_password_script(compose: dict[str, Any]) -> str:
    """The Python the init runs (a heredoc in its shell script) to write admin's password."""
    script = interpolate(compose["services"]["airflow-init"]["command"][1], ENV)
    match = re.search(r"python - <<'PY'\n(?P<code>.*?)\nPY\n", script, re.DOTALL)
    assert match, "airflow-init writes admin's password with an inline Python script"
    return match.group("code")


def test_init_writes_admins_password_from_env_and_keeps_other_users(compose: dict[str, Any], tmp_path: Path) -> None:
    passwords = tmp_path / "simple_auth_manager_passwords.json.generated"
    init_env = env_of(compose["services"]["airflow-init"])
    assert init_env["AIRFLOW_ADMIN_PASSWORD"] == "${AIRFLOW_ADMIN_PASSWORD:?set it in .env (make env)}"
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords), "AIRFLOW_ADMIN_PASSWORD": "s3cret"}
    code = _init_password_script(compose)

    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert json.loads(passwords.read_text()) == {"admin": "s3cret"}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    passwords.write_text(json.dumps({"admin": "old", "viewer": "generated"}))
    subprocess.run([sys.executable, "-c", code], env={**env, "AIRFLOW_ADMIN_PASSWORD": "n3w"}, check=True)
    assert json.loads(passwords.read_text()) == {"admin": "n3w", "viewer": "generated"}


def test_redis_requires_its_password_and_its_healthcheck_gives_it(compose: dict[str, Any]) -> None:
    redis = interpolate_all(compose, ENV)["services"]["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == ENV["REDIS_PASSWORD"]
    assert redis["command"] == ["sh", "-c", 'exec redis-server --requirepass "$REDIS_PASSWORD"']
    assert redis["healthcheck"]["test"] == [
        "CMD-SHELL",
        'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG',
    ]
    assert "ports" not in redis
