"""Kept for DAG files generated before the engine moved into subpackages: ``dag_for_pipeline``.

A DAG file written by ``batchscore dags sync`` names ``batchscore.dag_factory``; one already
deployed keeps parsing after an upgrade until the next ``dags sync`` rewrites it to
:mod:`batchscore.airflow.dag_factory`. Nothing in this repository imports this module.
"""

from batchscore.airflow.dag_factory import dag_for_pipeline

__all__ = ["dag_for_pipeline"]
