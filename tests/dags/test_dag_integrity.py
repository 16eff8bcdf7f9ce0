"""Every DAG file imports cleanly, stays light at parse time, and builds the expected graph."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
PIPELINES = sorted((REPO / "include" / "pipelines").glob("*.yaml"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, path: Path) -> None:
    assert str(path) not in dagbag.import_errors, dagbag.import_errors.get(str(path))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_config_becomes_a_dag(dagbag, path: Path) -> None:
    from batchscore.config import load_config

    config = load_config(path)
    dag = dagbag.dags.get(config.dag_id)
    assert dag is not None
    assert set(dag.task_ids) == {"plan", "score_slice", "publish"}
    assert dag.get_task("publish").upstream_task_ids == {"plan", "score_slice"}
    assert dag.get_task("score_slice").upstream_task_ids == {"plan"}
    assert dag.max_active_runs == config.execution.max_active_runs
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert set(dag.params) == {"window_start", "window_end", "model_version", "dry_run"}
    for task in dag.tasks:
        assert task.retries == config.execution.retries
    outlets = dag.get_task("publish").outlets
    assert [o.uri for o in outlets] == [f"batchscore://{config.output.conn_id}/{config.output.table}"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_does_not_import_heavy_libraries(path: Path) -> None:
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'pandas','sklearn','pyarrow','polars'})))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("model_version", "../../etc/passwd", "does not match"),
        ("model_version", "x" * 65, "does not match"),
        ("dry_run", "yes", "is not of type 'boolean'"),
        ("window_start", 20261101, "is not of type 'null', 'string'"),
    ],
)
def test_trigger_form_rejects_hostile_values(dagbag, name: str, value: object, message: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["score_churn"].params.get_param(name)
    with pytest.raises(ParamValidationError, match=message):
        param.resolve(value)
    assert param.resolve(None if name != "dry_run" else True) in (None, True)


def test_a_broken_pipeline_file_stops_only_its_own_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own DagBag: the broken file is an import error naming file and fields; churn still loads."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    churn = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(churn))
    broken = {k: v for k, v in churn.items() if k not in ("model", "entity_key")} | {"name": "broken"}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    (tmp_path / "typo.yaml").write_text("name: typo\nschedule: [")
    monkeypatch.setenv("BATCHSCORE_PIPELINES_DIR", str(tmp_path))

    bag = DagBag(dag_folder=str(REPO / "dags"))

    assert "score_churn" in bag.dags
    assert set(bag.dags["score_churn"].task_ids) == {"plan", "score_slice", "publish"}
    assert "score_broken" not in bag.dags and "score_typo" not in bag.dags
    (error,) = bag.import_errors.values()
    assert error.startswith("ConfigError: 2 pipeline files are invalid; the other pipelines are not affected")
    assert "broken.yaml: entity_key: Field required" in error
    assert "broken.yaml: model: Field required" in error
    assert "typo.yaml: not valid YAML" in error
