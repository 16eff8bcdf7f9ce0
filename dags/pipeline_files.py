"""Airflow DAG folder check: every pipeline file in include/pipelines has its generated DAG file.

This file defines no DAG. When a pipeline file has no DAG file yet (`batchscore dags sync`
was not run), it fails with an import error naming the file, so the new pipeline is not
silently unscheduled; that error stops no other DAG.
"""

from pathlib import Path

from batchscore import settings
from batchscore.airflow.dag_files import check_in_sync

check_in_sync(settings.pipelines_dir(), Path(__file__).resolve().parent)
