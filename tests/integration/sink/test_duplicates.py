"""One score per key per window: duplicated keys are rejected, kept once, or fail the run, as configured."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from batchscore.sink.load import DuplicateKeys
from batchscore.sink.scored_keys import ScoredKeys
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, expected_scores, run_record, stored_scores

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=2)))


def duplicating(policy: str) -> PipelineConfig:
    """churn with a query that repeats every key ending in 07 (as a faulty upstream join would), own table."""
    base = churn_config()
    query = f"SELECT * FROM ({base.source.query}) AS q UNION ALL SELECT * FROM ({base.source.query}) AS r " + (
        "WHERE customer_id % 100 = 7"
    )
    config = churn_variant(f"churn_dup_{policy}", query, duplicate_keys=policy, max_reject_fraction=0.2)
    return config.model_copy(update={"execution": base.execution.model_copy(update={"slice_rows": 1_000})})


def rejects_of(services: Services, pipeline: str, run_id: str) -> list[tuple]:
    with psycopg.connect(services.scores_url) as conn:
        return conn.execute(
            "SELECT entity_key, reason, row_data FROM scoring.rejects WHERE pipeline = %s AND run_id = %s "
            "AND reason LIKE 'duplicate key%%' ORDER BY entity_key, row_data->>'copy'",
            (pipeline, run_id),
        ).fetchall()


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


@pytest.mark.parametrize("slices", [1, 3])
def test_every_copy_of_a_duplicated_key_is_rejected_by_default(services: Services, slices: int) -> None:
    config = duplicating("reject")
    run_id = f"it__dup_reject_{slices}"
    result = run_pipeline(config, endpoints(services), window=WINDOW, run_id=run_id, max_slices=slices)
    record = run_record(services.scores_url, config.name, run_id)
    assert record is not None
    assert len(record["slices"]) == slices
    expected, rejected = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    doubled = {k for k in expected.index if k % 100 == 7}
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert stored.index.is_unique
    assert set(stored.index) == set(expected.index) - doubled
    np.testing.assert_allclose(stored["score"], expected.loc[stored.index, "score"], rtol=0, atol=1e-12)
    dup_rejects = rejects_of(services, config.name, run_id)
    assert len(dup_rejects) == 2 * len(doubled) > 0
    assert {int(k) for k, _, _ in dup_rejects} == doubled
    assert {reason for _, reason, _ in dup_rejects} == {"duplicate key: 2 copies in the window"}
    invalid_doubled = {k for k in rejected if k % 100 == 7}  # both copies fail validation first
    assert result.rows_rejected == len(rejected) + len(invalid_doubled) + 2 * len(doubled)
    assert record["rows_written"] == len(stored)
    assert record["score_summary"]["count"] == len(stored), "the summary counts only what was published"


def test_keep_first_keeps_one_copy_and_rejects_the_others(services: Services) -> None:
    config = duplicating("keep_first")
    run_id = "it__dup_first"
    run_pipeline(config, endpoints(services), window=WINDOW, run_id=run_id)
    expected, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    doubled = {k for k in expected.index if k % 100 == 7}
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert stored.index.is_unique
    assert set(stored.index) == set(expected.index)
    dup_rejects = rejects_of(services, config.name, run_id)
    assert {int(k) for k, _, _ in dup_rejects} == doubled
    assert len(dup_rejects) == len(doubled)
    assert {reason for _, reason, _ in dup_rejects} == {"duplicate key: 2 copies in the window (the first was kept)"}
    assert {row["copy"] for _, _, row in dup_rejects} == {2}


def test_fail_policy_fails_the_run_and_publishes_nothing(services: Services) -> None:
    config = duplicating("fail")
    with pytest.raises(DuplicateKeys, match=r"key\(s\) appear more than once in the window \(first: \d+"):
        run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__dup_fail")
    assert stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end).empty
    record = run_record(services.scores_url, config.name, "it__dup_fail")
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "score_slice")
    assert "duplicate_keys" in record["remedy"]


@pytest.mark.parametrize(
    ("keys", "duplicated"),
    [
        ([pa.array([3, 1, 2]), pa.array([5, 4])], False),
        ([pa.array([3, 1, 2]), pa.array([5, 1])], True),
        ([pa.chunked_array([pa.array(["a", "b"]), pa.array(["c"])])], False),
        ([pa.array(["a", "b"]), pa.array(["b"])], True),
        ([pa.array([], pa.int64())], False),
        ([], False),
    ],
)
def test_the_engine_proves_one_row_per_key(keys: list, duplicated: bool) -> None:
    scored = ScoredKeys()
    for batch in keys:
        scored.add(batch)
    assert scored.has_duplicates() is duplicated


ORIGINAL = (
    "customer_id, plan, region, channel, tenure_days, monthly_spend, txn_count_7d, txn_amount_7d, "
    "support_tickets_30d, days_since_last_login, avg_session_minutes, discount_rate, late_payments_90d"
)
# A second copy that differs from the first (a late correction upstream): other scores, other drift bins.
CHANGED = (
    "customer_id, plan, region, channel, tenure_days + 900, monthly_spend * 4 + 50, txn_count_7d, txn_amount_7d, "
    "support_tickets_30d + 5, days_since_last_login + 60, avg_session_minutes, discount_rate, late_payments_90d + 3"
)


def with_second_copies(rows: str, copied: str) -> str:
    """churn's rows matching ``rows``, and a changed second copy of those matching ``copied``, each key's copies
    next to each other (first the original) in the query's order."""
    base = churn_config().source.query
    return (
        f"SELECT {ORIGINAL} FROM (SELECT {ORIGINAL}, 1 AS copy FROM ({base}) AS a WHERE {rows} "
        f"UNION ALL SELECT {CHANGED}, 2 FROM ({base}) AS b WHERE {copied}) AS d ORDER BY customer_id, copy"
    )


def test_keep_first_keeps_the_same_copy_for_the_challenger_and_counts_only_what_it_kept(services: Services) -> None:
    """One-row batches on four threads finish in any order; the challenger must still keep each key's first copy."""
    from batchscore.pipeline.model_config import ShadowConfig
    from tests.conftest import CHALLENGER

    query = with_second_copies("customer_id % 10 = 7", "customer_id % 100 = 7")
    config = churn_variant("churn_dup_shadow", query, duplicate_keys="keep_first", max_reject_fraction=0.5)
    config = config.model_copy(
        update={
            "shadow": ShadowConfig(name=CHALLENGER, version="challenger"),
            "execution": config.execution.model_copy(update={"batch_rows": 1}),
        }
    )
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__dup_shadow", parallel=4)
    ours, _ = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    theirs, _ = expected_scores(
        services.warehouse_url, services.registry, WINDOW.start, WINDOW.end, (CHALLENGER, "challenger")
    )
    keys = sorted(k for k in ours.index if k % 10 == 7)
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    shadow = stored_scores(services.scores_url, config.shadow_table, WINDOW.start, WINDOW.end)
    assert sorted(stored.index) == sorted(shadow.index) == keys
    np.testing.assert_allclose(stored.loc[keys, "score"], ours.loc[keys, "score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(shadow.loc[keys, "score"], theirs.loc[keys, "score"], rtol=0, atol=1e-12)
    removed = {int(k): row["score"] for k, _, row in rejects_of(services, config.name, "it__dup_shadow")}
    assert len(removed) == len([k for k in keys if k % 100 == 7]) > 10
    differing = [k for k, score in removed.items() if abs(score - stored.loc[k, "score"]) > 1e-6]
    assert len(differing) > 0.8 * len(removed), "the copies must score differently for this test to tell them apart"

    record = run_record(services.scores_url, config.name, "it__dup_shadow")
    assert record is not None
    got = record["shadow"]
    assert (got["rows_scored"], got["rows"]) == (len(shadow), len(shadow)), "removed copies are not counted"
    assert got["rows_rejected"] == len(removed)
    diff = float(np.abs(stored.loc[keys, "score"] - shadow.loc[keys, "score"]).mean())
    assert got["mean_abs_diff"] == pytest.approx(diff, rel=1e-9)


def observed_bins(services: Services, pipeline: str, run_id: str) -> dict[str, list[float]]:
    with psycopg.connect(services.scores_url) as conn:
        rows = conn.execute(
            "SELECT feature, bins FROM scoring.drift WHERE pipeline = %s AND run_id = %s", (pipeline, run_id)
        ).fetchall()
    return {feature: bins["observed"] for feature, bins in rows}


@pytest.mark.parametrize(("policy", "kept"), [("reject", "customer_id % 100 <> 7"), ("keep_first", "true")])
def test_drift_counts_only_the_rows_that_are_published(services: Services, policy: str, kept: str) -> None:
    """Drift of a run whose source repeats keys equals drift of a run over just the rows it kept."""
    doubled = churn_variant(
        f"churn_dup_drift_{policy}",
        with_second_copies("true", "customer_id % 100 = 7"),
        duplicate_keys=policy,
        max_reject_fraction=0.1,
    )
    run_pipeline(doubled, endpoints(services), window=WINDOW, run_id=f"it__dup_drift_{policy}", max_slices=2)
    plain_query = f"SELECT {ORIGINAL} FROM ({churn_config().source.query}) AS q WHERE {kept}"
    plain = churn_variant(f"churn_dup_drift_{policy}_plain", plain_query)
    run_pipeline(plain, endpoints(services), window=WINDOW, run_id=f"it__dup_drift_{policy}_plain")
    got = observed_bins(services, doubled.name, f"it__dup_drift_{policy}")
    want = observed_bins(services, plain.name, f"it__dup_drift_{policy}_plain")
    assert set(got) == set(want)
    assert len(got) > 10
    for feature, fractions in want.items():
        np.testing.assert_allclose(got[feature], fractions, rtol=0, atol=1e-12, err_msg=feature)
