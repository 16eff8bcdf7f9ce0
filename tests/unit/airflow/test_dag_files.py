"""DAG files generated before the engine moved into subpackages keep parsing, and ``dags sync`` rewrites them."""

from __future__ import annotations

import shutil
from pathlib import Path

from batchscore.airflow.dag_files import render, sync

PIPELINES = Path(__file__).resolve().parents[3] / "include" / "pipelines"


def test_the_old_import_path_of_a_generated_dag_file_is_the_same_function() -> None:
    from batchscore.airflow.dag_factory import dag_for_pipeline
    from batchscore.dag_factory import dag_for_pipeline as deployed

    assert deployed is dag_for_pipeline


def test_sync_rewrites_a_dag_file_generated_with_the_old_import_path(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    shutil.copy(PIPELINES / "churn.yaml", pipelines / "churn.yaml")
    dags = tmp_path / "dags"
    dags.mkdir()
    old = render("churn").replace("batchscore.airflow.dag_factory", "batchscore.dag_factory")
    (dags / "score_churn.py").write_text(old)

    result = sync(pipelines, dags)

    assert result.written == ("evaluate_churn", "churn")
    assert result.removed == ()
    assert (dags / "score_churn.py").read_text() == render("churn")
    assert "from batchscore.airflow.dag_factory import dag_for_pipeline\n" in render("churn")
