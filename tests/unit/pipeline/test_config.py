from pathlib import Path

import pytest
import yaml

from batchscore.pipeline.config import ConfigError, load_config, parse_config
from batchscore.pipeline.folder import load_all, load_each

REPO = Path(__file__).resolve().parents[3]
CHURN = REPO / "include" / "pipelines" / "churn.yaml"


def churn_data() -> dict:
    return yaml.safe_load(CHURN.read_text())


def write(tmp_path: Path, data: object, name: str = "churn") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_is_valid() -> None:
    config = load_config(CHURN)
    assert config.dag_id == "score_churn"
    assert config.output.table == "scoring.churn_scores"
    assert config.model.version == "champion"
    assert "plan" in config.features
    assert config.validation.max_reject_fraction == 0.01


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("source", "query"),
            "SELECT * FROM t WHERE ts >= :window_start",
            "must use both :window_start and :window_end",
        ),
        (("output", "table"), "churn_scores", "must be schema.table"),
        (("output", "table"), "scoring.x; DROP TABLE y", "must be a lower-case SQL identifier"),
        (("schedule",), "every night", "not a valid cron expression"),
        (("timezone",), "Mars/Olympus", "unknown time zone"),
        (("model", "version"), "../../etc/passwd", "String should match pattern"),
        (("validation", "max_reject_fraction"), 1.5, "less than or equal to 1"),
        (("execution", "slice_rows"), 10, "greater than or equal to 100"),
        (("entity_key",), "Customer-ID", "must be a lower-case SQL identifier"),
        (("source", "query"), "SELECT 1 WHERE :window_start < :window_end; DELETE FROM t", "single SELECT"),
    ],
)
def test_invalid_field_is_named_with_the_file(
    tmp_path: Path, path: tuple[str, ...], value: object, expected: str
) -> None:
    data = churn_data()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert str(file) in message
    assert ".".join(path) in message
    assert expected in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    data = churn_data()
    data["model"]["alias"] = "prod"
    with pytest.raises(ConfigError, match=r"model\.alias: Extra inputs are not permitted"):
        load_config(write(tmp_path, data))


def test_missing_field_is_named(tmp_path: Path) -> None:
    data = churn_data()
    del data["entity_key"]
    with pytest.raises(ConfigError, match=r"entity_key: Field required"):
        load_config(write(tmp_path, data))


def test_key_cannot_be_a_feature(tmp_path: Path) -> None:
    data = churn_data()
    data["features"].append("customer_id")
    with pytest.raises(ConfigError, match="must not also be a feature"):
        load_config(write(tmp_path, data))


def test_duplicate_features_are_rejected(tmp_path: Path) -> None:
    data = churn_data()
    data["features"].append("plan")
    with pytest.raises(ConfigError, match="listed more than once: plan"):
        load_config(write(tmp_path, data))


def test_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must match the file name 'other'"):
        load_config(write(tmp_path, churn_data(), name="other"))


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "churn.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["a", "list"], bad)


def test_version_number_is_accepted_as_text(tmp_path: Path) -> None:
    data = churn_data()
    data["model"]["version"] = 3
    assert load_config(write(tmp_path, data)).model.version == "3"


def test_load_all_reports_every_broken_file_and_shared_tables(tmp_path: Path) -> None:
    write(tmp_path, churn_data())
    second = churn_data() | {"name": "churn2"}
    write(tmp_path, second, name="churn2")
    broken = churn_data() | {"name": "broken", "schedule": "nope"}
    write(tmp_path, broken, name="broken")
    with pytest.raises(ConfigError) as info:
        load_all(tmp_path)
    message = str(info.value)
    assert "broken.yaml: schedule" in message
    assert "churn.yaml, " in message
    assert "churn2.yaml: output.table: all write scoring.churn_scores" in message


def test_each_pipeline_file_is_loaded_on_its_own(tmp_path: Path) -> None:
    write(tmp_path, churn_data())
    broken = churn_data() | {"name": "broken"}
    del broken["model"], broken["entity_key"]
    write(tmp_path, broken, name="broken")
    (tmp_path / "garbled.yaml").write_text("name: [unclosed")
    loaded = load_each(tmp_path)
    assert [c.name for c in loaded.configs] == ["churn"]
    assert set(loaded.errors) == {"broken", "garbled"}
    assert "broken.yaml: entity_key: Field required" in loaded.errors["broken"]
    assert "broken.yaml: model: Field required" in loaded.errors["broken"]
    assert "garbled.yaml: not valid YAML" in loaded.errors["garbled"]


def test_second_pipeline_needs_only_a_file(tmp_path: Path) -> None:
    write(tmp_path, churn_data())
    other = churn_data() | {"name": "churn_weekly", "schedule": "0 3 * * 1"}
    other["output"] = {"conn_id": "scores_db", "table": "scoring.churn_weekly_scores"}
    write(tmp_path, other, name="churn_weekly")
    assert [c.dag_id for c in load_all(tmp_path)] == ["score_churn", "score_churn_weekly"]


def test_renamed_execution_fields_say_their_new_name(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data["execution"] = {"part_rows": 250_000}
    with pytest.raises(ConfigError, match=r"execution: part_rows was renamed slice_rows"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize(
    ("section", "value", "where", "expected"),
    [
        ("drift", {"policy": "block"}, "drift.policy", "Input should be 'warn', 'hold' or 'off'"),
        ("drift", {"threshold": -0.1}, "drift.threshold", "Input should be greater than 0"),
        ("drift", {"min_rows": "many"}, "drift.min_rows", "Input should be a valid integer"),
        ("shadow", {"name": "churn"}, "shadow.version", "Field required"),
        ("shadow", {"version": "../champion"}, "shadow.version", "String should match pattern"),
        ("shadow", {"version": 2, "sha256": "abc"}, "shadow.sha256", "String should match pattern"),
        ("shadow", {"version": 2, "table": "x.y"}, "shadow.table", "Extra inputs are not permitted"),
    ],
)
def test_drift_and_shadow_fields_are_checked(
    tmp_path: Path, section: str, value: dict, where: str, expected: str
) -> None:
    data = churn_data() | {section: value}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    assert f"{where}: {expected}" in str(info.value)


def test_the_volume_guard_is_on_by_default_and_its_fields_are_checked(tmp_path: Path) -> None:
    guard = load_config(write(tmp_path, churn_data())).validation
    assert (guard.min_rows, guard.min_replace_fraction, guard.min_rows_fraction, guard.history_windows) == (
        1,
        0.9,
        0.5,
        7,
    )
    for field, value, expected in (
        ("min_replace_fraction", 1.5, "Input should be less than or equal to 1"),
        ("min_rows_fraction", -0.1, "Input should be greater than or equal to 0"),
        ("min_rows", -1, "Input should be greater than or equal to 0"),
        ("history_windows", 0, "Input should be greater than or equal to 1"),
    ):
        data = churn_data()
        data["validation"] = {**data["validation"], field: value}
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, data))
        assert f"validation.{field}: {expected}" in str(info.value)


def test_a_shadow_table_must_fit_beside_the_output_table(tmp_path: Path) -> None:
    data = churn_data() | {"shadow": {"version": "challenger"}}
    data["output"]["table"] = "scoring." + "s" * 60
    with pytest.raises(ConfigError, match="too long to have a _shadow table beside it"):
        load_config(write(tmp_path, data))
    data["output"]["table"] = "scoring.churn_scores"
    config = load_config(write(tmp_path, data))
    assert config.shadow is not None
    assert (config.shadow.version, config.shadow_table) == ("challenger", "scoring.churn_scores_shadow")
    assert (config.drift.policy, config.drift.threshold) == ("warn", 0.25)


def with_model(tmp_path: Path, model: dict) -> Path:
    data = churn_data()
    data["model"] = model
    return write(tmp_path, data)


def test_an_mlflow_model_names_its_registry_model_after_itself(tmp_path: Path) -> None:
    config = load_config(with_model(tmp_path, {"mlflow": "models:/churn@champion"}))
    assert (config.model.name, config.model.mlflow_conn_id, config.model.reference) == (
        "churn",
        "mlflow_default",
        "models:/churn@champion",
    )
    ref = config.model.mlflow_ref
    assert ref is not None
    assert (ref.name, ref.alias, ref.version) == ("churn", "champion", None)
    assert ref.with_ref("7").uri == "models:/churn/7"
    assert ref.with_ref("challenger").uri == "models:/churn@challenger"
    pinned = load_config(with_model(tmp_path, {"name": "churn_v", "mlflow": "models:/Churn Model/3"}))
    assert (pinned.model.name, pinned.model.mlflow_ref) == ("churn_v", type(ref)("Churn Model", version=3))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"mlflow": "models:/churn/latest"}, "model.mlflow: 'models:/churn/latest' is not an MLflow model URI"),
        ({"mlflow": "runs:/abc/model"}, "use models:/<name>@<alias> or models:/<name>/<version>"),
        ({"mlflow": "models:/churn@champion", "version": "3"}, "model: version and mlflow are exclusive"),
        ({"name": "churn", "mlflow_conn_id": "mlflow_x"}, "model: mlflow_conn_id is only used with mlflow"),
        ({"mlflow": "models:/Churn Model@champion"}, "model: name is required: the MLflow model name 'Churn Model'"),
        ({"mlflow": "models:/churn@champion", "mlflow_conn_id": "a b"}, "model.mlflow_conn_id: String should match"),
    ],
)
def test_a_bad_mlflow_reference_is_named_in_one_error(tmp_path: Path, model: dict, expected: str) -> None:
    file = with_model(tmp_path, model)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == str(info.value).splitlines()[0]  # one line: no second error about name
    assert str(info.value).startswith(f"{file}: ")
    assert expected in str(info.value)


def test_publish_wait_and_sweep_age_have_defaults_and_bounds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, churn_data()))
    assert (config.execution.publish_wait_seconds, config.execution.sweep_after_hours) == (600, 24.0)
    data = churn_data()
    data["execution"] = {**data.get("execution", {}), "sweep_after_hours": 0}
    with pytest.raises(ConfigError, match="sweep_after_hours"):
        load_config(write(tmp_path, data))


def test_outcomes_horizon_and_query_are_checked(tmp_path: Path) -> None:
    data = churn_data()
    config = load_config(write(tmp_path, data))
    assert config.outcomes is not None
    assert config.outcomes.horizon_delta.days == 30
    data["outcomes"] = {"query": "SELECT customer_id, churned FROM t", "horizon": "a month"}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    assert "outcomes.query: must use both :window_start and :window_end" in str(caught.value)
    assert "outcomes.horizon: 'a month' must be a whole number of hours, days or weeks" in str(caught.value)


def test_promotion_needs_a_shadow_of_the_same_model_and_outcomes(tmp_path: Path) -> None:
    data = churn_data() | {"promotion": {"windows": 3}}
    with pytest.raises(ConfigError, match="promotion needs both shadow"):
        load_config(write(tmp_path, data))
    data["shadow"] = {"name": "other", "version": "challenger"}
    with pytest.raises(ConfigError, match="shadow must be a version of churn"):
        load_config(write(tmp_path, data))
    data["shadow"] = {"version": "challenger"}
    data["promotion"]["requires"] = {"metric": "accuracy", "min_gain": 0.01}
    with pytest.raises(ConfigError, match=r"promotion\.requires\.metric"):
        load_config(write(tmp_path, data))
    data["promotion"]["requires"] = {"metric": "roc_auc", "min_gain": 0.01}
    assert load_config(write(tmp_path, data)).promotion.requires.windows == 7  # type: ignore[union-attr]
