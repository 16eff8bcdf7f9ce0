"""Airflow's Celery configuration, plus the scoring stack preloaded in each worker before it forks its pool.

Set ``[celery] celery_config_options = batchscore.airflow.celery_config.CELERY_CONFIG``. Celery
imports the modules listed in ``imports`` in the worker's main process when the worker starts,
before it forks its pool. Each pool process, and each task process it forks, then starts with
the scoring stack imported (:mod:`batchscore.airflow.warm_start` says what that saves).
Everything else is Airflow's default Celery configuration.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "batchscore.airflow.warm_start"),
}
