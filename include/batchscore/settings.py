"""Where things live: the project's paths and the environment variables that move them.

Every location has a local default under the repo's git-ignored ``.local/`` folder
and an environment variable that points it elsewhere (an object store URL for the model
registry when Airflow workers run on several machines). Nothing else is shared between
tasks but the databases: no task reads a file another task wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = Path(os.environ.get("BATCHSCORE_LOCAL_DIR", PROJECT_ROOT / ".local"))


def host_name() -> str:
    """This worker's name: ``BATCHSCORE_WORKER_NAME``, else the host's (Airflow's hostname_callable too)."""
    import socket

    return os.environ.get("BATCHSCORE_WORKER_NAME") or socket.getfqdn()


def pipelines_dir() -> Path:
    """Folder holding one YAML file per scoring pipeline."""
    return Path(os.environ.get("BATCHSCORE_PIPELINES_DIR", PROJECT_ROOT / "include" / "pipelines"))


def model_registry_root() -> str:
    """Model registry location: a local path or an fsspec URL (``s3://bucket/models``)."""
    return os.environ.get("BATCHSCORE_MODEL_REGISTRY", str(LOCAL_DIR / "registry"))


def registry_lock_url() -> str | None:
    """A PostgreSQL URL whose advisory locks every registry writer takes (``BATCHSCORE_REGISTRY_LOCK_URL``).

    Needed only for a store without an atomic create-if-absent (:mod:`batchscore.models.registry_lock`).
    """
    return os.environ.get("BATCHSCORE_REGISTRY_LOCK_URL") or None


def sql_dir() -> Path:
    """Folder holding the DDL the engine applies."""
    return PROJECT_ROOT / "include" / "sql"
