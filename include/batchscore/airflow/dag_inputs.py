"""What every generated DAG is built from: its pipeline file, read alone, and its first day.

The scoring, evaluation and promotion DAGs of one pipeline share these, so the three agree on
the file they read, the error a missing file gives, and the day their schedules begin.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from batchscore import settings
from batchscore.pipeline.config import ConfigError, PipelineConfig, load_config


def pipeline_config(name: str) -> PipelineConfig:
    """The pipeline file ``<name>.yaml``, read alone (an error in it stops only its own DAGs).

    An error raises a :class:`ConfigError` naming the file and its fields, which Airflow shows
    as the DAG file's import error. (Clashes between files are reported by the DAG folder's
    check file.)
    """
    path = settings.pipelines_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no such pipeline file; run `batchscore dags sync` to remove its DAG file")
    return load_config(path)


def first_day(config: PipelineConfig) -> datetime:
    """The DAG's ``start_date``: midnight of the pipeline's ``start_date`` in its own timezone."""
    return datetime.combine(config.start_date, datetime.min.time(), tzinfo=ZoneInfo(config.timezone))
