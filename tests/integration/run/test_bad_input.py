"""The bad-input matrix: every case ends in one exact error before any write, or in exact rejects.

Failing cases run against a window that already holds scores and assert that those scores are
still there, unchanged, and that no slice table is left behind. Cases that succeed run into a
table of their own and assert the exact rejected keys and reasons.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from batchscore.airflow.glue import ParamError, run_params
from batchscore.local.demo.warehouse import FEATURES
from batchscore.models.manifest import RegistryError
from batchscore.pipeline.config import ConfigError, PipelineConfig, parse_config
from batchscore.pipeline.windows import Window, WindowError, resolve_window
from batchscore.run.failures import fail_run
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, PlanError, plan_run
from batchscore.run.stages import score_slice
from batchscore.scoring.features import SchemaMismatch
from batchscore.sink.load import DuplicateKeys
from batchscore.sink.publish import RejectThresholdExceeded
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.hostile_models import hostile_files
from tests.integration.helpers import (
    REPO,
    churn_config,
    churn_variant,
    count,
    expected_scores,
    run_record,
    stored_scores,
)

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=1)))
COLUMNS = ("customer_id", *FEATURES)
BASE_TABLE = "scoring.bad_input_scores"


def rewritten(
    name: str, *, drop: tuple[str, ...] = (), extra: str = "", tail: str = "", **exprs: str
) -> PipelineConfig:
    """churn, its query wrapped so some columns are replaced by ``exprs`` (SQL over the original row)."""
    base = churn_config()
    select = ", ".join(f"{exprs.get(c, c)} AS {c}" for c in COLUMNS if c not in drop) + extra
    return churn_variant(
        name, f"SELECT {select} FROM ({base.source.query}) AS original {tail}", max_reject_fraction=0.2
    )


def with_table(config: PipelineConfig, table: str = BASE_TABLE, **changes: object) -> PipelineConfig:
    return config.model_copy(update={"output": config.output.model_copy(update={"table": table}), **changes})


def endpoints(services: Services, registry: str | None = None) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, registry or services.registry)


@pytest.fixture(scope="module")
def published(services: Services) -> pd.DataFrame:
    """The window's scores before any bad input (what every failing case must leave untouched)."""
    config = with_table(churn_config().model_copy(update={"name": "bad_input"}))
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__bad_baseline")
    scores = stored_scores(services.scores_url, BASE_TABLE, WINDOW.start, WINDOW.end)
    assert len(scores) > 2_000
    return scores


def assert_untouched(services: Services, before: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(before, stored_scores(services.scores_url, BASE_TABLE, WINDOW.start, WINDOW.end))
    unpublished = count(
        services.scores_url,
        "SELECT count(*) FROM scoring.lineage WHERE published_at IS NULL AND pipeline = 'bad_input'",
    )
    assert unpublished == 0, "a failed run leaves no slice table behind"


def tampered(registry: Path) -> None:
    artifact = next(registry.glob("churn/artifacts/*.skops"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


def truncated(registry: Path) -> None:
    for artifact in registry.glob("churn/artifacts/*.skops"):
        artifact.write_bytes(artifact.read_bytes()[:-100])


def missing(registry: Path) -> None:
    for artifact in registry.glob("churn/artifacts/*.skops"):
        artifact.unlink()


def duplicated() -> PipelineConfig:
    """churn with every key ending in 01 twice (a faulty upstream join) and ``duplicate_keys: fail``."""
    base = churn_config()
    query = f"SELECT * FROM ({base.source.query}) a UNION ALL SELECT * FROM ({base.source.query}) b "
    query += "WHERE customer_id % 50 = 1"
    return base.model_copy(
        update={
            "source": base.source.model_copy(update={"query": query}),
            "validation": base.validation.model_copy(update={"duplicate_keys": "fail"}),
        }
    )


SPEND_NA = "CASE WHEN customer_id % 97 = 0 THEN 'n/a' ELSE monthly_spend::text END"
HOSTILE_TABLE = {"conn_id": "scores_db", "table": 'x"; drop table y; --'}
CHURN_YAML = REPO / "include" / "pipelines" / "churn.yaml"


FAILING: list[tuple[str, Callable[[], PipelineConfig], dict, type[Exception], str]] = [
    (
        "missing column",
        lambda: rewritten("bad_input", drop=("channel",)),
        {},
        SchemaMismatch,
        "does not return channel",
    ),
    (
        "numbers turned into text",
        lambda: rewritten("bad_input", tenure_days="tenure_days::text"),
        {},
        SchemaMismatch,
        r"feature 'tenure_days' is string in the source but was int\d+ when the model was trained",
    ),
    (
        "a string in a numeric column",
        lambda: rewritten(
            "bad_input", monthly_spend="CASE WHEN customer_id % 97 = 0 THEN 'n/a' ELSE monthly_spend::text END"
        ),
        {},
        SchemaMismatch,
        r"feature 'monthly_spend' is string in the source but was double",
    ),
    (
        "a float entity key",
        lambda: rewritten("bad_input", customer_id="customer_id::float8"),
        {},
        SchemaMismatch,
        "entity key 'customer_id' has type double; use an integer or text key",
    ),
    (
        "tampered model file",
        churn_config,
        {"registry": tampered},
        RegistryError,
        "does not match its manifest",
    ),
    (
        "truncated model file",
        churn_config,
        {"registry": truncated},
        RegistryError,
        "does not match its manifest",
    ),
    ("missing model file", churn_config, {"registry": missing}, RegistryError, r"artifact .* is missing"),
    (
        "unknown alias",
        churn_config,
        {"model_ref": "nope"},
        RegistryError,
        "has no alias 'nope'; known aliases",
    ),
    ("unknown version", churn_config, {"model_ref": "99"}, RegistryError, "has no version 99"),
    (
        "model features do not match the query",
        lambda: churn_config(features=tuple(f for f in churn_config().features if f != "plan")),
        {},
        PlanError,
        "the model needs plan which the pipeline does not list",
    ),
    ("duplicate keys under duplicate_keys: fail", duplicated, {}, DuplicateKeys, "appear more than once"),
    (
        "NULLs above the reject threshold",
        lambda: rewritten("bad_input", plan="CASE WHEN customer_id % 2 = 0 THEN NULL ELSE plan END"),
        {},
        RejectThresholdExceeded,
        r"failed validation, above max_reject_fraction=20\.00%.*plan is NULL",
    ),
    (
        # the error is shown with the run record, to readers who may not read the rejected values
        "unseen categories above the reject threshold: the error names the kind, not the values",
        lambda: rewritten("bad_input", region="CASE WHEN customer_id % 2 = 0 THEN 'mars' ELSE region END"),
        {},
        RejectThresholdExceeded,
        r"^(?!.*mars).*Top reasons: [\d,]+ × region: unseen category '…'",
    ),
]


@pytest.mark.parametrize(("case", "make", "how", "error", "message"), FAILING, ids=[c[0] for c in FAILING])
def test_bad_input_fails_with_one_clear_error_and_writes_nothing(
    services: Services,
    published: pd.DataFrame,
    tmp_path: Path,
    case: str,
    make: Callable[[], PipelineConfig],
    how: dict,
    error: type[Exception],
    message: str,
) -> None:
    config = with_table(make().model_copy(update={"name": "bad_input"}))
    registry = None
    if "registry" in how:
        copy = tmp_path / "registry"
        shutil.copytree(services.registry, copy)
        how["registry"](copy)
        registry = str(copy)
    run_id = f"it__bad_{case.replace(' ', '_').replace(':', '')}"
    with pytest.raises(error, match=message):
        run_pipeline(
            config, endpoints(services, registry), window=WINDOW, run_id=run_id, model_ref=how.get("model_ref")
        )
    assert_untouched(services, published)
    record = run_record(services.scores_url, "bad_input", run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert record["error"].startswith(f"{error.__name__}: ")
    assert "\n" not in record["error"]
    assert record["remedy"] == error.remedy  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: run_params({"model_version": 'x"; drop table scoring.lineage; --'}), ParamError, "must be a version"),
        (lambda: run_params({"dry_run": "'; --"}), ParamError, "must be true or false"),
        (
            lambda: resolve_window(
                schedule="0 0 * * *",
                run_after=datetime(2026, 11, 1, tzinfo=UTC),
                param_start="2026-10-01'; drop table heldout.tumors; --",
                param_end="2026-10-02",
            ),
            WindowError,
            "not an ISO",
        ),
        (
            lambda: parse_config(
                {
                    **churn_config().model_dump(mode="json"),
                    "output": {"conn_id": "scores_db", "table": 'x"; drop table y; --'},
                },
                REPO / "include" / "pipelines" / "churn.yaml",
            ),
            ConfigError,
            r"output\.table: .*must be schema\.table",
        ),
        (
            lambda: parse_config(
                {**churn_config().model_dump(mode="json"), "entity_key": "id; drop table y"}, CHURN_YAML
            ),
            ConfigError,
            "entity_key: name 'id; drop table y' must be a lower-case SQL identifier",
        ),
    ],
    ids=[
        "hostile model_version",
        "hostile dry_run",
        "hostile window_start",
        "hostile output.table",
        "hostile entity_key",
    ],
)
def test_hostile_values_are_refused_before_a_run(
    services: Services, published: pd.DataFrame, call, error, message
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()
    assert_untouched(services, published)


def test_a_source_table_dropped_between_plan_and_scoring(services: Services, published: pd.DataFrame) -> None:
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS warehouse.vanishing")
        conn.execute("CREATE TABLE warehouse.vanishing AS SELECT * FROM warehouse.customer_activity")
    base = churn_config()
    query = base.source.query.replace("warehouse.customer_activity", "warehouse.vanishing")
    config = with_table(
        base.model_copy(update={"name": "bad_input", "source": base.source.model_copy(update={"query": query})})
    )
    plan = plan_run(config, endpoints(services), window=WINDOW, run_id="it__bad_vanished")
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute("DROP TABLE warehouse.vanishing")
    with pytest.raises(Exception, match="vanishing") as info:
        score_slice(config, endpoints(services), plan, plan.key_slices[0])
    fail_run(config, endpoints(services), "it__bad_vanished", info.value, stage="score_slice", window=WINDOW)
    assert_untouched(services, published)
    record = run_record(services.scores_url, "bad_input", "it__bad_vanished")
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "score_slice")
    assert record["remedy"].startswith("transient"), "a missing table may come back: retried, not failed fast"


@pytest.mark.parametrize("way", ["utils._testing.check_output", "numpy.memmap", "datasets.dump_svmlight_file"])
def test_a_hostile_model_file_swapped_into_the_registry_fails_the_run_and_runs_nothing(
    services: Services, published: pd.DataFrame, tmp_path: Path, way: str
) -> None:
    """Someone with write access to the registry replaces the champion's bytes and its manifest's sha256."""
    import hashlib
    import json

    registry = tmp_path / "registry"
    shutil.copytree(services.registry, registry)
    payload = tmp_path / "payload"
    payload.mkdir()
    hostile = hostile_files(payload / "code-ran")[way]
    for manifest in registry.glob("churn/versions/*/manifest.json"):
        doc = json.loads(manifest.read_text())
        (registry / "churn" / doc["artifact"]).write_bytes(hostile)
        manifest.write_text(json.dumps(doc | {"sha256": hashlib.sha256(hostile).hexdigest()}))
    run_id = f"it__bad_hostile_{way.replace('.', '_')}"
    config = with_table(churn_config().model_copy(update={"name": "bad_input"}))
    with pytest.raises(RegistryError, match="outside the allowlist"):
        run_pipeline(config, endpoints(services, str(registry)), window=WINDOW, run_id=run_id)
    assert not list(payload.iterdir()), "nothing the file named ran"
    assert_untouched(services, published)
    record = run_record(services.scores_url, "bad_input", run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert "outside the allowlist" in record["error"]
    assert "\n" not in record["error"]


def rejects_of(services: Services, pipeline: str, run_id: str) -> dict[int | None, str]:
    with psycopg.connect(services.scores_url) as conn:
        rows = conn.execute(
            "SELECT entity_key, reason FROM scoring.rejects WHERE pipeline = %s AND run_id = %s", (pipeline, run_id)
        ).fetchall()
    return {None if k is None else int(k): r for k, r in rows}


SUCCEEDING = [
    ("nulls", {"plan": "CASE WHEN customer_id % 97 = 0 THEN NULL ELSE plan END"}, 97, "plan is NULL"),
    (
        "infinities",
        {"monthly_spend": "CASE WHEN customer_id % 89 = 0 THEN 'Infinity'::float8 ELSE monthly_spend END"},
        89,
        "monthly_spend is not finite",
    ),
    (
        "minus_infinities",
        {"txn_amount_7d": "CASE WHEN customer_id % 83 = 0 THEN '-Infinity'::float8 ELSE txn_amount_7d END"},
        83,
        "txn_amount_7d is not finite",
    ),
    (
        "unseen",
        {"region": "CASE WHEN customer_id % 79 = 0 THEN 'mars' ELSE region END"},
        79,
        "region: unseen category 'mars'",
    ),
]


@pytest.mark.parametrize(("name", "exprs", "modulo", "reason"), SUCCEEDING, ids=[c[0] for c in SUCCEEDING])
def test_bad_rows_are_rejected_with_their_reason_and_the_rest_scored_exactly(
    services: Services, name: str, exprs: dict[str, str], modulo: int, reason: str
) -> None:
    config = rewritten(f"bad_rows_{name}", **exprs)
    run_id = f"it__rows_{name}"
    run_pipeline(config, endpoints(services), window=WINDOW, run_id=run_id)
    expected, naturally_rejected = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    hit = {k for k in expected.index if k % modulo == 0}
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert set(stored.index) == set(expected.index) - hit
    pd.testing.assert_series_equal(
        stored["score"].sort_index(),
        expected.loc[stored.index, "score"].sort_index(),
        check_exact=False,
        rtol=0,
        atol=1e-12,
        check_names=False,
    )
    rejects = rejects_of(services, config.name, run_id)
    assert {k for k, r in rejects.items() if r == reason} == hit
    assert set(rejects) == hit | naturally_rejected


def test_a_null_entity_key_is_rejected(services: Services) -> None:
    config = rewritten(
        "bad_rows_null_key", customer_id="CASE WHEN customer_id % 101 = 0 THEN NULL ELSE customer_id END"
    )
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__rows_null_key")
    rejects = rejects_of(services, config.name, "it__rows_null_key")
    expected, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    assert rejects[None] == "customer_id (entity key) is NULL"
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert set(stored.index) == {k for k in expected.index if k % 101 != 0}


def test_an_extra_column_is_scored_and_named_in_the_run_record(services: Services) -> None:
    config = rewritten("bad_rows_extra", extra=", 'a note'::text AS comment, customer_id * 2 AS twice")
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__rows_extra")
    record = run_record(services.scores_url, config.name, "it__rows_extra")
    assert record is not None
    assert record["status"] == "success"
    assert record["unused_columns"] == ["comment", "twice"]


def test_a_one_row_window_is_scored(services: Services) -> None:
    config = rewritten("bad_rows_one_row", tail="ORDER BY customer_id LIMIT 1")
    result = run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__rows_one")
    expected, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert result.rows_written == len(stored) == 1
    first = min(expected.index)
    assert abs(stored.loc[first, "score"] - expected.loc[first, "score"]) < 1e-12
