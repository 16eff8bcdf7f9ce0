"""Static checks of docker-compose.yaml and Dockerfile (no Docker engine needed).

The compose file is parsed with ``yaml.safe_load``, which resolves the ``<<: *airflow-common``
merge keys, so every Airflow service is checked as Docker Compose would see it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from batchscore.cli.compose_env import render
from tests.unit.deploy.compose_file import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    compose_schema,
    env_of,
    interpolate,
    parse_env_file,
    references,
)

DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCK_FILE = REPO_ROOT / "requirements.lock"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
# flower shares the Airflow image but only runs under the "flower" profile.
AIRFLOW_IMAGE_SERVICES = (*AIRFLOW_SERVICES, "flower")
INFRA_SERVICES = ("postgres", "redis", "warehouse-db", "scores-db")
REQUIRED_SERVICES = (*INFRA_SERVICES, *AIRFLOW_SERVICES)
# What `make env` writes: the values Compose interpolates the file with.
ENV = parse_env_file(render(ENV_EXAMPLE.read_text(), uid=1000))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def depends_on_names(service: dict[str, Any]) -> list[str]:
    deps = service.get("depends_on") or []
    return list(deps) if isinstance(deps, (list, dict)) else []


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def named_volume_sources(service: dict[str, Any]) -> list[str]:
    """Sources of the service's volume mounts that are named volumes (not host paths)."""
    names = []
    for mount in service.get("volumes") or []:
        if isinstance(mount, dict):
            if mount.get("type", "volume") != "volume":
                continue
            source = interpolate(mount.get("source", ""), ENV)
        else:
            # Interpolate first: a default such as ${AIRFLOW_PROJ_DIR:-.} contains a colon.
            source = interpolate(mount, ENV).split(":", 1)[0]
        if source and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def locked_airflow_version() -> str:
    match = re.search(r"^apache-airflow==(\S+)\s*$", LOCK_FILE.read_text(), re.MULTILINE)
    assert match, "requirements.lock does not pin apache-airflow"
    return match.group(1)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, with comments and line continuations removed."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


# --------------------------------------------------------------------------- services


def test_required_services_exist(services):
    missing = sorted(set(REQUIRED_SERVICES) - set(services))
    assert missing == []


def test_all_airflow_named_services_are_checked(services):
    airflow_named = {name for name in services if name.startswith("airflow-")}
    assert airflow_named == set(AIRFLOW_SERVICES)


def test_flower_is_optional_behind_its_profile(services):
    assert services["flower"]["profiles"] == ["flower"]
    assert services["flower"]["command"] == "celery flower"


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_service_builds_from_repo_dockerfile(services, name):
    build = services[name]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (REPO_ROOT / context).resolve() == REPO_ROOT
    assert dockerfile == "Dockerfile"
    assert (REPO_ROOT / context / dockerfile).is_file()


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_service_uses_celery_executor(services, name):
    assert env_of(services[name])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_service_core_environment(services, name):
    env = env_of(services[name])
    broker = urlsplit(interpolate(env["AIRFLOW__CELERY__BROKER_URL"], ENV))
    assert (broker.scheme, broker.hostname, broker.port, broker.path) == ("redis", "redis", 6379, "/0")
    assert broker.password == ENV["REDIS_PASSWORD"] == interpolate(env_of(services["redis"])["REDIS_PASSWORD"], ENV)
    metadata_db = urlsplit(interpolate(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], ENV))
    assert (metadata_db.scheme, metadata_db.hostname, metadata_db.path) == (
        "postgresql+psycopg2",
        "postgres",
        "/airflow",
    )
    result_backend = urlsplit(interpolate(env["AIRFLOW__CELERY__RESULT_BACKEND"], ENV))
    assert (result_backend.scheme, result_backend.hostname) == ("db+postgresql", "postgres")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "${AIRFLOW_DAGS_PAUSED_AT_CREATION:-false}"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert interpolate(env["AIRFLOW__API_AUTH__JWT_SECRET"], ENV) == ENV["AIRFLOW_JWT_SECRET"]
    assert env["PYTHONPATH"] == "/opt/airflow/include"
    assert env["BATCHSCORE_PIPELINES_DIR"] == "/opt/airflow/include/pipelines"
    assert env["BATCHSCORE_MODEL_REGISTRY"] == "/opt/airflow/models"
    assert "BATCHSCORE_STAGING_URL" not in env  # slices load straight into the scores database


def test_metadata_db_credentials_match_postgres_service(services):
    env = env_of(services["airflow-scheduler"])
    postgres_env = env_of(services["postgres"])
    uri = urlsplit(interpolate(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], ENV))
    assert uri.username == postgres_env["POSTGRES_USER"] == "airflow"
    assert uri.password == interpolate(postgres_env["POSTGRES_PASSWORD"], ENV) == ENV["AIRFLOW_DB_PASSWORD"]
    assert uri.path.lstrip("/") == postgres_env["POSTGRES_DB"]


def test_apiserver_publishes_8080(services):
    assert [interpolate(str(port), {}) for port in services["airflow-apiserver"]["ports"]] == ["127.0.0.1:8080:8080"]
    assert services["airflow-apiserver"]["command"] == "api-server"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-worker", "celery worker"),
        ("airflow-triggerer", "triggerer"),
    ],
)
def test_airflow_service_commands(services, name, command):
    assert services[name]["command"] == command


def test_airflow_init_migrates_the_metadata_db(services):
    init = services["airflow-init"]
    script = init["command"] if isinstance(init["command"], str) else "\n".join(init["command"])
    assert "airflow db migrate" in script or env_of(init).get("_AIRFLOW_DB_MIGRATE") == "true"
    for name in set(AIRFLOW_SERVICES) - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postgres", "pg_isready"),
        ("warehouse-db", "pg_isready"),
        ("scores-db", "pg_isready"),
        ("redis", "redis-cli ping"),
        ("airflow-apiserver", "http://localhost:8080/api/v2/version"),
        ("airflow-scheduler", "http://localhost:8974/health"),
        (
            "airflow-worker",
            "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping",
        ),
    ],
)
def test_healthchecks(services, name, expected):
    assert expected in healthcheck_command(services[name])


@pytest.mark.parametrize(("name", "database"), [("warehouse-db", "warehouse"), ("scores-db", "scores")])
def test_project_databases(services, name, database):
    service = services[name]
    assert service["image"] == "postgres:16"
    assert env_of(service)["POSTGRES_DB"] == database
    assert any(mount.endswith(":/var/lib/postgresql/data") for mount in service["volumes"])
    assert named_volume_sources(service) != []


def test_depends_on_names_only_existing_services(services):
    dangling = {
        (name, dep) for name, service in services.items() for dep in depends_on_names(service) if dep not in services
    }
    assert dangling == set()


def test_worker_waits_for_project_databases(services):
    deps = services["airflow-worker"]["depends_on"]
    assert deps["warehouse-db"]["condition"] == "service_healthy"
    assert deps["scores-db"]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    ("conn_var", "service_name"),
    [("AIRFLOW_CONN_WAREHOUSE_DB", "warehouse-db"), ("AIRFLOW_CONN_SCORES_DB", "scores-db")],
)
def test_airflow_connections_point_at_project_databases(services, conn_var, service_name):
    db_env = env_of(services[service_name])
    for name in AIRFLOW_IMAGE_SERVICES:
        raw = env_of(services[name])[conn_var]
        uri = urlsplit(interpolate(raw, ENV))
        assert uri.scheme == "postgresql"
        assert uri.hostname == service_name
        assert uri.port == 5432
        assert uri.username == db_env["POSTGRES_USER"]
        assert uri.path.lstrip("/") == db_env["POSTGRES_DB"]
        # The same variable as the database's own password, so setting one sets both.
        assert db_env["POSTGRES_PASSWORD"] in raw
        assert uri.password == interpolate(db_env["POSTGRES_PASSWORD"], ENV)


# --------------------------------------------------------------------------- volumes


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    used = {vol for service in services.values() for vol in named_volume_sources(service)}
    assert used - declared == set()
    assert {"postgres-db-volume", "warehouse-db-volume", "scores-db-volume"} <= used


@pytest.mark.parametrize("name", AIRFLOW_IMAGE_SERVICES)
def test_airflow_service_mounts(services, name):
    volumes = services[name]["volumes"]
    assert "model-registry:/opt/airflow/models" in volumes
    targets = {interpolate(mount, ENV).split(":")[1] for mount in volumes}
    assert {
        "/opt/airflow/dags",
        "/opt/airflow/include",
        "/opt/airflow/plugins",
        "/opt/airflow/logs",
        "/opt/airflow/config",
    } <= targets


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_matches_locked_airflow_version():
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1
    match = re.fullmatch(r"apache/airflow:(?P<version>[0-9][^-\s]*)(?:-python(?P<python>\S+))?", froms[0])
    assert match, f"unexpected base image {froms[0]!r}"
    assert match.group("version") == locked_airflow_version()


def test_dockerfile_python_matches_lock_python_version():
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    lock_python = re.search(r"--python-version[ =](\S+)", LOCK_FILE.read_text())
    assert lock_python, "requirements.lock header does not record --python-version"
    assert froms[0].endswith(f"-python{lock_python.group(1)}")


def test_dockerfile_installs_the_lock():
    instructions = dockerfile_instructions()
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any(args.split()[-2] == "requirements.lock" for args in copies)
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 1
    assert re.search(r"-r\s+\S*requirements\.lock\b", installs[0])
    assert "--no-cache-dir" in installs[0]


def test_dockerfile_ships_project_code_and_pythonpath():
    instructions = dockerfile_instructions()
    copies = {tuple(args.split()[-2:]) for keyword, args in instructions if keyword == "COPY"}
    assert {
        ("include/", "/opt/airflow/include/"),
        ("dags/", "/opt/airflow/dags/"),
        ("plugins/", "/opt/airflow/plugins/"),
    } <= copies
    assert ("ENV", "PYTHONPATH=/opt/airflow/include") in instructions


def test_airflow_init_seeds_the_demo_and_registers_its_model(services):
    """`docker compose up` ends with scores: the init prepares the warehouse and the model the DAG needs."""
    script = "\n".join(services["airflow-init"]["command"])
    assert script.index("airflow db migrate") < script.index("python -m batchscore demo-data")
    assert '--url "$${AIRFLOW_CONN_WAREHOUSE_DB}"' in script


def test_env_example_names_every_variable_and_env_is_never_committed():
    referenced = references(COMPOSE_FILE.read_text())
    example = set(parse_env_file(ENV_EXAMPLE.read_text()))
    optional = {"AIRFLOW_PROJ_DIR", "BATCHSCORE_IMAGE_NAME", "AIRFLOW_SIMPLE_AUTH_USERS"}
    assert referenced - optional <= example, f"missing from .env.example: {sorted(referenced - optional - example)}"
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_the_file_is_valid_against_the_compose_specification(compose):
    """The Compose specification's JSON schema (from the pinned docker-compose wheel `make install` fetches)."""
    import jsonschema

    schema = compose_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]]
    # The schema checks shapes; a service name typo in depends_on is what it cannot see.
    for name, service in compose["services"].items():
        for needed in service.get("depends_on", {}):
            assert needed in compose["services"], f"{name} depends on unknown {needed}"
