"""Every DAG file imports cleanly, stays light at parse time, and builds the expected graph."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
PIPELINES = sorted((REPO / "include" / "pipelines").glob("*.yaml"))


@pytest.fixture(scope="module")
def dagbag():
    """The project's own dags/ over its own include/pipelines (the test session points elsewhere)."""
    from airflow.dag_processing.dagbag import DagBag

    before = os.environ.get("BATCHSCORE_PIPELINES_DIR")
    os.environ["BATCHSCORE_PIPELINES_DIR"] = str(REPO / "include" / "pipelines")
    try:
        return DagBag(dag_folder=str(REPO / "dags"))
    finally:
        if before is None:
            os.environ.pop("BATCHSCORE_PIPELINES_DIR")
        else:
            os.environ["BATCHSCORE_PIPELINES_DIR"] = before


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_generated_dag_files_are_current() -> None:
    """`make dags` was run: one DAG file per pipeline file, exactly as generated, and none left over."""
    from batchscore.airflow.dag_files import dag_file_name, render

    generated = {p.name for p in (REPO / "dags").glob("score_*.py")}
    assert generated == {dag_file_name(p.stem) for p in PIPELINES}
    for path in PIPELINES:
        assert (REPO / "dags" / dag_file_name(path.stem)).read_text() == render(path.stem)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, path: Path) -> None:
    assert str(path) not in dagbag.import_errors, dagbag.import_errors.get(str(path))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_config_becomes_a_dag(dagbag, path: Path) -> None:
    from batchscore.pipeline.config import load_config

    config = load_config(path)
    dag = dagbag.dags.get(config.dag_id)
    assert dag is not None
    assert set(dag.task_ids) == {"plan", "score_slice", "publish"}
    assert dag.get_task("publish").upstream_task_ids == {"plan", "score_slice"}
    assert dag.get_task("score_slice").upstream_task_ids == {"plan"}
    assert dag.max_active_runs == config.execution.max_active_runs
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert set(dag.params) == {"window_start", "window_end", "model_version", "dry_run", "allow_shrink"}
    for task in dag.tasks:
        assert task.retries == config.execution.retries
    outlets = dag.get_task("publish").outlets
    assert [(type(o).__name__, o.name) for o in outlets] == [("AssetAlias", f"scores_{config.name}_published")]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_does_not_import_heavy_libraries(path: Path) -> None:
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'pandas','sklearn','pyarrow','polars'})))"
    )
    env = {**os.environ, "BATCHSCORE_PIPELINES_DIR": str(REPO / "include" / "pipelines")}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("model_version", "../../etc/passwd", "does not match"),
        ("model_version", "x" * 65, "does not match"),
        ("dry_run", "yes", "is not of type 'boolean'"),
        ("allow_shrink", "yes", "is not of type 'boolean'"),
        ("window_start", 20261101, "is not of type 'null', 'string'"),
        ("window_start", "2026-10-01'; drop table heldout.tumors; --", "does not match"),
        ("window_end", "tomorrow", "does not match"),
        ("window_end", "2026-11-01T00:00:00+00:00; --", "does not match"),
    ],
)
def test_trigger_form_rejects_hostile_values(dagbag, name: str, value: object, message: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    param = dagbag.dags["score_churn"].params.get_param(name)
    with pytest.raises(ParamValidationError, match=message):
        param.resolve(value)
    assert param.resolve(None if name not in ("dry_run", "allow_shrink") else True) in (None, True)


def test_a_broken_pipeline_file_stops_only_its_own_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own DagBag: each broken file is its own DAG file's import error, naming the fields;
    a pipeline without a DAG file is named by the check file; churn loads untouched."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    from batchscore.airflow.dag_files import sync

    pipelines, dags = tmp_path / "pipelines", tmp_path / "dags"
    pipelines.mkdir()
    churn = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    (pipelines / "churn.yaml").write_text(yaml.safe_dump(churn))
    broken = {k: v for k, v in churn.items() if k not in ("model", "entity_key")} | {"name": "broken"}
    (pipelines / "broken.yaml").write_text(yaml.safe_dump(broken))
    (pipelines / "typo.yaml").write_text("name: typo\nschedule: [")
    sync(pipelines, dags)
    shutil.copy(REPO / "dags" / "pipeline_files.py", dags)
    (pipelines / "added.yaml").write_text(yaml.safe_dump(churn | {"name": "added"}))  # no `make dags` yet
    monkeypatch.setenv("BATCHSCORE_PIPELINES_DIR", str(pipelines))

    bag = DagBag(dag_folder=str(dags))

    assert set(bag.dags) == {"score_churn", "evaluate_churn"}  # churn has outcomes: its evaluation DAG too
    assert set(bag.dags["score_churn"].task_ids) == {"plan", "score_slice", "publish"}
    assert set(bag.dags["evaluate_churn"].task_ids) == {"wait_for_horizon", "evaluate"}
    errors = {Path(path).name: error for path, error in bag.import_errors.items()}
    assert set(errors) == {"score_broken.py", "score_typo.py", "pipeline_files.py"}
    assert "broken.yaml: entity_key: Field required" in errors["score_broken.py"]
    assert "broken.yaml: model: Field required" in errors["score_broken.py"]
    assert "typo.yaml: not valid YAML" in errors["score_typo.py"]
    assert "added.yaml has no DAG file" in errors["pipeline_files.py"]
    assert "all write scoring.churn_scores" in errors["pipeline_files.py"]  # reported; churn keeps running
