"""Where things live: the project's paths and the environment variables that move them.

Every location has a local default under the repo's git-ignored ``.local/`` folder
and an environment variable that points it elsewhere (a shared volume or an object
store URL when Airflow workers run on several machines).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = Path(os.environ.get("BATCHSCORE_LOCAL_DIR", PROJECT_ROOT / ".local"))


def pipelines_dir() -> Path:
    """Folder holding one YAML file per scoring pipeline."""
    return Path(os.environ.get("BATCHSCORE_PIPELINES_DIR", PROJECT_ROOT / "include" / "pipelines"))


def model_registry_root() -> str:
    """Model registry location: a local path or an fsspec URL (``s3://bucket/models``)."""
    return os.environ.get("BATCHSCORE_MODEL_REGISTRY", str(LOCAL_DIR / "registry"))


def staging_root() -> str:
    """Staging location for the parts passed between tasks: a local path or an fsspec URL."""
    return os.environ.get("BATCHSCORE_STAGING_URL", str(LOCAL_DIR / "staging"))


def sql_dir() -> Path:
    """Folder holding the DDL the engine applies."""
    return PROJECT_ROOT / "include" / "sql"
