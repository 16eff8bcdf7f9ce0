"""docker-compose.yaml as Docker Compose reads it, for the tests (no Docker engine needed).

``yaml.safe_load`` resolves the ``<<: *airflow-common`` merge keys, so every service is seen
as Compose sees it. :func:`interpolate` follows the Compose specification's interpolation:
``$$`` is a literal ``$``; ``${NAME}``; ``${NAME:-default}`` (unset or empty) and
``${NAME-default}`` (unset); ``${NAME:?message}`` (unset or empty) and ``${NAME?message}``
(unset) stop Compose with ``required variable NAME is missing a value: message``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

TOKEN = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """Compose refuses the file: a required variable has no value."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """``value`` with every reference resolved from ``environ`` (the shell's environment plus .env)."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = environ.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op is None:
            return current or ""
        if op.endswith("-"):
            return arg if missing else str(current)
        if missing:
            raise MissingVariable(name, arg)
        return str(current)

    return TOKEN.sub(resolve, value)


def interpolate_all(node: Any, environ: Mapping[str, str]) -> Any:
    """Every string value of a parsed compose file interpolated (keys are not, as in Compose)."""
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [interpolate_all(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, environ) for key, value in node.items()}
    return node


def strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every string in a parsed compose file, as ``services.postgres.environment.X``."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from strings(item, f"{where}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{where}.{key}" if where else str(key))


def references(text: str) -> set[str]:
    """Names of every variable ``text`` refers to (``$$`` escapes excluded)."""
    return {m.group("name") for m in TOKEN.finditer(text) if m.group("name")}


def required(text: str) -> set[str]:
    """Names of the variables ``text`` requires (``${NAME:?message}``)."""
    return {m.group("name") for m in TOKEN.finditer(text) if (m.group("op") or "").endswith("?")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def iter_env_items(compose: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every (where, key, value) environment entry: the x- extension blocks and all services."""
    for name, block in compose.items():
        if name.startswith("x-") and isinstance(block, dict):
            for key, value in env_of(block).items():
                yield name, key, value
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            yield name, key, value


def parse_env_file(text: str) -> dict[str, str]:
    """``NAME=value`` lines of a .env file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value for name, value in pairs}


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, from the pinned docker-compose wheel `make install` fetches."""
    import json
    import sys
    import zipfile

    wheels = sorted((Path(sys.prefix) / "share" / "compose-spec").glob("docker_compose-*.whl"))
    assert wheels, "run `make install`: it downloads the schema (requirements-compose-spec.txt)"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return dict(json.loads(wheel.read("compose/config/compose_spec.json")))
