"""Airflow plugin: the scheduler's preloading forkserver starts with the scheduler (LocalExecutor).

The listener lives in the engine's Airflow adapter, :mod:`batchscore.airflow.forkserver_start`.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from batchscore.airflow import forkserver_start


class WarmForkserverPlugin(AirflowPlugin):
    name = "batchscore_warm_forkserver"
    listeners = [forkserver_start]  # noqa: RUF012 (Airflow API)
