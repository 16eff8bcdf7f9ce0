"""The folder check names every table two pipelines would both write: scores tables, shadows and lineage views."""

from pathlib import Path

import yaml

from batchscore.pipeline.config import load_config
from batchscore.pipeline.folder import load_each, table_clashes
from batchscore.pipeline.table_names import written_tables

CHURN = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "churn.yaml"


def write(folder: Path, name: str, table: str, *, shadow: bool = False) -> None:
    data = yaml.safe_load(CHURN.read_text()) | {"name": name, "output": {"conn_id": "scores_db", "table": table}}
    if shadow:
        data["shadow"] = {"version": "challenger"}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


def clashes(folder: Path) -> list[str]:
    return table_clashes(folder, load_each(folder).configs)


def test_a_pipeline_writes_its_table_its_shadow_and_both_lineage_views(tmp_path: Path) -> None:
    write(tmp_path, "churn", "scoring.churn_scores", shadow=True)
    config = load_config(tmp_path / "churn.yaml")
    assert [(w.table, w.role) for w in written_tables(config)] == [
        ("scoring.churn_scores", "scores"),
        ("scoring.churn_scores_lineage", "lineage view"),
        ("scoring.churn_scores_shadow", "shadow"),
        ("scoring.churn_scores_shadow_lineage", "lineage view"),
    ]


def test_an_output_table_that_is_another_pipelines_shadow_is_named(tmp_path: Path) -> None:
    write(tmp_path, "churn", "scoring.churn_scores", shadow=True)
    write(tmp_path, "intruder", "scoring.churn_scores_shadow")
    assert clashes(tmp_path) == [
        f"{tmp_path}/churn.yaml (shadow (output.table + _shadow)), {tmp_path}/intruder.yaml (output.table): "
        "all write scoring.churn_scores_shadow; only the pipeline that claimed it first may run"
    ]


def test_an_output_table_named_like_another_tables_lineage_view_is_named(tmp_path: Path) -> None:
    write(tmp_path, "churn", "scoring.churn_scores")
    write(tmp_path, "viewer", "scoring.churn_scores_lineage")
    (message,) = clashes(tmp_path)
    assert "all write scoring.churn_scores_lineage" in message
    assert "viewer.yaml (output.table)" in message
    assert "churn.yaml (lineage view)" in message


def test_one_shared_table_is_one_message_and_distinct_tables_none(tmp_path: Path) -> None:
    write(tmp_path, "churn", "scoring.churn_scores", shadow=True)
    write(tmp_path, "again", "scoring.churn_scores", shadow=True)
    write(tmp_path, "other", "scoring.other_scores", shadow=True)
    found = clashes(tmp_path)
    assert [m.split("all write ")[1].split(";")[0] for m in found] == [
        "scoring.churn_scores",
        "scoring.churn_scores_shadow",
    ]
    assert found[0].startswith(f"{tmp_path}/again.yaml, {tmp_path}/churn.yaml: output.table: ")
