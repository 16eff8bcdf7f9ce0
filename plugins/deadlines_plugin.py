"""Airflow plugin: registers the scores-due deadline reference that pipelines with ``sla:`` use.

Airflow resolves a DAG's custom deadline reference by its class path, and only among classes a
plugin lists in ``deadline_references`` (the scheduler evaluates it when it creates a run). The
class lives in the engine's Airflow adapter, :mod:`batchscore.airflow.deadlines`.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from batchscore.airflow.deadlines import ScoresDue


class BatchscoreDeadlinesPlugin(AirflowPlugin):
    name = "batchscore_deadlines"
    deadline_references = [ScoresDue]  # noqa: RUF012 (Airflow API)
