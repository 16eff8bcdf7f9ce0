"""One scoring DAG per pipeline config in include/pipelines/ (score_<name>).

Kept thin on purpose: it reads small YAML files and builds airflow.sdk DAG objects;
pandas, pyarrow and scikit-learn are only imported inside the running tasks.

Each pipeline file is loaded and built on its own, so a broken file stops only its own
DAG: it is reported as this file's import error (naming the YAML file and the field),
and every other pipeline keeps its schedule.
"""

from airflow.sdk import DAG

from batchscore import settings
from batchscore.dag_factory import build_isolated

dags: dict[str, DAG] = build_isolated(settings.pipelines_dir())
globals().update(dags)
