"""One scoring DAG per pipeline config in include/pipelines/ (score_<name>).

Kept thin on purpose: it reads small YAML files and builds airflow.sdk DAG objects;
pandas, pyarrow and scikit-learn are only imported inside the running tasks.
"""

from airflow.sdk import DAG

from batchscore import settings
from batchscore.config import load_all
from batchscore.dag_factory import build_dag

dags: dict[str, DAG] = {config.dag_id: build_dag(config) for config in load_all(settings.pipelines_dir())}
globals().update(dags)
