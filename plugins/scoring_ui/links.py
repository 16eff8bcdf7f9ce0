"""Addresses in Airflow's own UI for a scoring run: the DAG run and its tasks' logs.

Built from the path Airflow mounted the plugin under, so they hold behind a base path too.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

MOUNT = "/scoring"
STAGES = ("plan", "score_slice", "publish")


def airflow_base(root_path: str) -> str:
    """Airflow's UI root, from the plugin app's ``root_path`` (``<base>/scoring``)."""
    return root_path.removesuffix(MOUNT)


def dag_id_of(pipeline: str) -> str:
    return f"score_{pipeline}"


def pipeline_of(dag_id: str) -> str | None:
    """The pipeline a DAG scores, or None for a DAG that is not a scoring DAG."""
    return dag_id.removeprefix("score_") if dag_id.startswith("score_") and len(dag_id) > 6 else None


def dag_run(base: str, pipeline: str, run_id: str) -> str:
    return f"{base}/dags/{quote(dag_id_of(pipeline), safe='')}/runs/{quote(run_id, safe='')}"


def task_logs(base: str, pipeline: str, run_id: str, stage: str) -> str:
    """A stage's task instance (its logs); the mapped ``score_slice`` lists its slices."""
    url = f"{dag_run(base, pipeline, run_id)}/tasks/{quote(stage, safe='')}"
    return f"{url}/mapped" if stage == "score_slice" else url


def dag(base: str, pipeline: str) -> str:
    return f"{base}/dags/{quote(dag_id_of(pipeline), safe='')}"


def evaluation_dag(base: str, pipeline: str) -> str:
    """The pipeline's ``evaluate_<name>`` DAG, which records its windows' realised performance."""
    return f"{base}/dags/{quote(f'evaluate_{pipeline}', safe='')}"


def page(root_path: str, name: str, **params: object) -> str:
    """A page of this plugin, with its query (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{root_path}/{name}" + (f"?{query}" if query else "")
