"""Drift on the real database: recorded per feature, warned, or holding the publish; PSI checked independently."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.run_config import DriftConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, PlanError
from batchscore.scoring.drift import SCORE
from batchscore.sink.publish import DriftHeld
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, expected_scores, run_record, stored_scores
from tests.unit.scoring.test_drift import independent_psi, pandas_numeric_fractions

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=4)))
COLUMNS = (
    "customer_id, plan, region, channel, tenure_days, {spend} AS monthly_spend, txn_count_7d, txn_amount_7d, "
    "support_tickets_30d, days_since_last_login, avg_session_minutes, discount_rate, late_payments_90d"
)


def query(spend: str = "monthly_spend") -> str:
    """churn's query, with ``spend`` as the monthly_spend column (``monthly_spend * 3``: a broken upstream unit)."""
    return f"SELECT {COLUMNS.format(spend=spend)} FROM ({churn_config().source.query}) AS q"


def pipeline(name: str, spend: str = "monthly_spend", **drift: object) -> PipelineConfig:
    config = churn_variant(name, query(spend))
    return config.model_copy(update={"drift": DriftConfig(**drift)})  # type: ignore[arg-type]


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def drift_rows(services: Services, pipeline: str, run_id: str) -> dict[str, dict]:
    with psycopg.connect(services.scores_url) as conn:
        cur = conn.execute(
            "SELECT feature, kind, psi, threshold, drifted, bins FROM scoring.drift "
            "WHERE pipeline = %s AND run_id = %s",
            (pipeline, run_id),
        )
        names = [c.name for c in cur.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def test_a_shifted_feature_is_recorded_and_warned(services: Services) -> None:
    config = pipeline("churn_drift_warn", "monthly_spend * 3")
    result = run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__drift_warn")
    assert result.published
    assert result.rows_written > 2000
    record = run_record(services.scores_url, config.name, "it__drift_warn")
    assert record is not None
    assert record["status"] == "success"
    assert record["drift_status"] == "warn"
    rows = drift_rows(services, config.name, "it__drift_warn")
    manifest = ModelRegistry(services.registry).resolve("churn", "champion")
    assert set(rows) == {*manifest.feature_names, SCORE}
    assert [name for name, row in rows.items() if row["drifted"]] == ["monthly_spend"]
    assert record["drift_max_psi"] == pytest.approx(rows["monthly_spend"]["psi"])

    # The PSI, recomputed here from the window's rows the model scored (read with psycopg, binned with pandas).
    _, rejected = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    with psycopg.connect(services.warehouse_url) as conn:
        window_rows = pd.DataFrame(
            conn.execute(
                "SELECT customer_id, monthly_spend * 3 FROM warehouse.customer_activity "
                "WHERE event_time >= %s AND event_time < %s",
                (WINDOW.start, WINDOW.end),
            ).fetchall(),
            columns=["customer_id", "spend"],
        )
    scored = window_rows[~window_rows["customer_id"].isin(rejected)]["spend"].astype(float)
    bins = next(b for b in manifest.reference["bins"] if b["column"] == "monthly_spend")  # type: ignore[index]
    observed = pandas_numeric_fractions(scored.reset_index(drop=True), bins["edges"])
    assert rows["monthly_spend"]["bins"]["observed"] == pytest.approx(observed.tolist(), abs=1e-12)
    expected_psi = independent_psi(observed, pd.Series(bins["reference"]))
    assert rows["monthly_spend"]["psi"] == pytest.approx(expected_psi, rel=1e-9)
    assert rows["monthly_spend"]["psi"] > 1.0  # tripled: most rows land in the top decile


def test_hold_publishes_nothing_and_names_the_drifted_features(services: Services) -> None:
    config = pipeline("churn_drift_hold", policy="hold")
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__drift_hold_1")
    first = run_record(services.scores_url, config.name, "it__drift_hold_1")
    assert first is not None
    assert first["status"] == "success"
    assert first["drift_status"] == "ok"
    before = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    assert len(before) > 2000

    shifted = pipeline("churn_drift_hold", "monthly_spend * 3", policy="hold")
    with pytest.raises(DriftHeld, match=r"monthly_spend PSI \d+\.\d+ > 0\.25; nothing was published"):
        run_pipeline(shifted, endpoints(services), window=WINDOW, run_id="it__drift_hold_2")
    after = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    pd.testing.assert_frame_equal(after, before)  # the previous scores stay, with their lineage
    held = run_record(services.scores_url, config.name, "it__drift_hold_2")
    assert held is not None
    assert (held["status"], held["drift_status"], held["failed_stage"]) == ("failed", "held", "publish")
    assert "drift.policy" in held["remedy"]
    assert drift_rows(services, config.name, "it__drift_hold_2")["monthly_spend"]["drifted"]
    with psycopg.connect(services.scores_url) as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'churn_drift_hold_scores_l%%' "
            "AND tablename NOT IN (SELECT relname FROM pg_inherits JOIN pg_class ON oid = inhrelid)"
        ).fetchone()
    assert leftovers == (0,)


def test_hold_needs_a_reference_and_off_records_nothing(services: Services) -> None:
    registry = ModelRegistry(services.registry)
    champion = registry.resolve("churn", "champion")
    bare = registry.register(
        "churn_no_reference", registry.load(champion), champion.features, positive_class="1", aliases=("champion",)
    )
    assert bare.reference is None
    config = pipeline("churn_drift_bare", policy="hold")
    config = config.model_copy(update={"model": config.model.model_copy(update={"name": "churn_no_reference"})})
    with pytest.raises(PlanError, match="holds on drift, but model churn_no_reference v1 has no drift reference"):
        run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__drift_bare")
    assert stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end).empty

    off = pipeline("churn_drift_off", "monthly_spend * 3", policy="off")
    run_pipeline(off, endpoints(services), window=WINDOW, run_id="it__drift_off")
    record = run_record(services.scores_url, off.name, "it__drift_off")
    assert record is not None
    assert record["status"] == "success"
    assert record["drift_status"] is None
    assert drift_rows(services, off.name, "it__drift_off") == {}


def test_register_with_a_reference_query(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import skops.io as sio

    from batchscore.cli.main import main

    registry = ModelRegistry(services.registry)
    champion = registry.resolve("churn", "champion")
    path = tmp_path / "churn.skops"
    sio.dump(registry.load(champion), path)
    training = champion.training
    span = f"{training['window_start']}/{training['window_end']}"
    args = ["--name", "churn_from_cli", "--file", str(path), "--reference", query(), "--reference-window", span]
    assert main(["models", "register", *args, "--reference-url", services.warehouse_url]) == 0
    assert "drift reference:" in capsys.readouterr().out
    manifest = registry.resolve("churn_from_cli", "latest")
    assert manifest.reference is not None
    ours = {b["column"]: b for b in manifest.reference["bins"]}
    theirs = {b["column"]: b for b in champion.reference["bins"]}  # type: ignore[index]
    assert set(ours) == set(theirs)
    # the same window, read by the query (with the rows training dropped): the same deciles, near-equal fractions
    assert ours["tenure_days"]["edges"] == pytest.approx(theirs["tenure_days"]["edges"], rel=0.05)
    assert np.abs(np.subtract(ours[SCORE]["reference"], theirs[SCORE]["reference"])).max() < 0.05
    bad = ["--name", "churn_from_cli", "--file", str(path), "--reference", "SELECT 1", "--reference-window", span]
    assert main(["models", "register", *bad, "--reference-url", services.warehouse_url]) == 1
    assert "--reference: must use both :window_start and :window_end" in capsys.readouterr().err
