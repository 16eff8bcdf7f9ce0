"""The demo's three models: registered once by prepare_data, and each kind stored exactly as its own predict says.

The classifier's scores are checked row for row in test_engine.py; here the regressor (a score,
no label) and the clusterer (a label, no score), each through the engine's run_pipeline on the
real PostgreSQL, against the model's own ``predict`` on rows read independently.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from batchscore import db
from batchscore.local.demo import run
from batchscore.local.demo.catalog import DEMO_MODELS
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import load_config
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from batchscore.scoring.drift import SCORE
from tests.conftest import WAREHOUSE_DAYS, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import model_input, run_record, stored_scores, window_rows

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _prepare(services: Services, registry: str) -> None:
    """prepare_data as the demo calls it, on the session's warehouse as it stands (so it is current, not reseeded)."""
    customers, last_day = run.warehouse_days(services.warehouse_url)
    assert last_day is not None
    today = last_day + timedelta(days=1)
    first_day = WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS)
    run.prepare_data(
        services.warehouse_url, registry, rows_per_day=customers, days=(today - first_day).days, today=today
    )


@pytest.fixture(scope="module")
def demo_registry(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh registry that prepare_data filled with the three demo models."""
    registry = str(tmp_path_factory.mktemp("demo-registry"))
    patch = pytest.MonkeyPatch()

    def no_reseed(*_: object, **__: object) -> int:
        raise AssertionError("prepare_data reseeded a current warehouse")

    patch.setattr(run, "seed_warehouse", no_reseed)
    try:
        _prepare(services, registry)
        yield registry
    finally:
        patch.undo()


def champion(registry: str, name: str) -> ModelManifest:
    return ModelRegistry(registry).resolve(name, "champion")


def test_prepare_data_registers_the_three_kinds_once(
    services: Services, demo_registry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(demo_registry)
    assert registry.names() == sorted(d.name for d in DEMO_MODELS) == ["churn", "segments", "spend"]
    assert {n: champion(demo_registry, n).task for n in registry.names()} == {
        "churn": "classifier",
        "spend": "regressor",
        "segments": "clusterer",
    }
    spend, segments = champion(demo_registry, "spend"), champion(demo_registry, "segments")
    assert 0.5 < spend.metrics["holdout_r2"] <= spend.metrics["ground_truth_rule_r2"] + 0.05
    assert 0 < spend.metrics["holdout_mae"] < spend.metrics["holdout_mean_spend"]
    assert spend.training["target"] == "spend_next_30d"
    assert spend.positive_class is None
    assert segments.metrics["inertia"] > 0
    assert -1 <= segments.metrics["silhouette"] <= 1
    assert set(segments.training["segments"]) == {"0", "1", "2", "3"}
    assert sum(s["share"] for s in segments.training["segments"].values()) == pytest.approx(1, abs=1e-3)
    assert all(f.kind == "numeric" for f in segments.features)
    for name in registry.names():  # each is registered with its training data as the drift reference
        reference = champion(demo_registry, name).reference
        assert reference is not None
        assert {b["column"] for b in reference["bins"]} == {*champion(demo_registry, name).feature_names, SCORE}
    before = {n: (registry.versions(n), registry.aliases(n)) for n in registry.names()}
    capsys.readouterr()

    _prepare(services, demo_registry)  # the second call: nothing to train

    assert {n: (registry.versions(n), registry.aliases(n)) for n in registry.names()} == before
    assert before == {n: ([1], {"champion": 1}) for n in ("churn", "segments", "spend")}
    out = capsys.readouterr().out
    assert "training" not in out
    assert [line.split("] ", 1)[1].split(":")[0] for line in out.splitlines()] == [
        "model churn v1",
        "model spend v1",
        "model segments v1",
    ]


def _score(services: Services, registry: str, pipeline: str, day: date, run_id: str) -> tuple[Window, pd.DataFrame]:
    """Run ``pipeline`` on ``day`` through the engine; returns the window and its rows as read independently."""
    window = Window(*day_window(day))
    config = load_config(REPO / "include" / "pipelines" / f"{pipeline}.yaml")
    endpoints = Endpoints(services.warehouse_url, services.scores_url, registry)
    run_pipeline(config, endpoints, window=window, run_id=run_id)
    return window, window_rows(services.warehouse_url, window.start, window.end)


def _lineage_is(stored: pd.DataFrame, manifest: ModelManifest, run_id: str) -> None:
    assert set(stored["model_name"]) == {manifest.name}
    assert set(stored["model_version"]) == {manifest.version}
    assert set(stored["model_sha256"]) == {manifest.sha256}
    assert set(stored["run_id"]) == {run_id}


def test_regressor_scores_equal_its_own_predict_with_null_labels(services: Services, demo_registry: str) -> None:
    manifest = champion(demo_registry, "spend")
    window, rows = _score(services, demo_registry, "spend", WAREHOUSE_END - timedelta(days=1), "it__spend")
    regions = next(f.categories for f in manifest.features if f.name == "region")
    bad = rows["plan"].isna() | ~rows["region"].isin(regions)
    good = rows[~bad]
    model = ModelRegistry(demo_registry).load(manifest)
    expected = pd.Series(
        model.predict(model_input(good, list(manifest.feature_names))), index=good["customer_id"].to_numpy()
    )
    stored = stored_scores(services.scores_url, "scoring.spend_scores", window.start, window.end)
    assert len(stored) == len(expected) > 2_000
    assert set(stored.index) == set(expected.index)
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected, rtol=1e-12, atol=0)
    assert stored["label"].isna().all()
    _lineage_is(stored, manifest, "it__spend")
    record = run_record(services.scores_url, "spend", "it__spend")
    assert record is not None
    assert (record["status"], record["rows_written"], record["rows_rejected"]) == ("success", len(good), bad.sum())
    assert record["score_summary"]["mean"] == pytest.approx(expected.mean(), rel=1e-9)
    assert record["score_summary"]["labels"] == {"null": len(good)}
    assert record["drift_status"] == "ok", "a later day of the training distribution, against the training reference"


def test_clusterer_labels_equal_its_own_predict_with_null_scores(services: Services, demo_registry: str) -> None:
    manifest = champion(demo_registry, "segments")
    window, rows = _score(services, demo_registry, "segments", WAREHOUSE_END - timedelta(days=2), "it__segments")
    model = ModelRegistry(demo_registry).load(manifest)
    expected = pd.Series(
        model.predict(model_input(rows, list(manifest.feature_names))).astype(str),
        index=rows["customer_id"].to_numpy(),
    )
    stored = stored_scores(services.scores_url, "scoring.customer_segments", window.start, window.end)
    assert len(stored) == len(rows) > 2_000, "numeric features with NULLs imputed: nothing to reject"
    pd.testing.assert_series_equal(stored.loc[expected.index, "label"], expected, check_names=False)
    assert stored["score"].isna().all()
    assert set(stored["label"]) == {"0", "1", "2", "3"}
    _lineage_is(stored, manifest, "it__segments")
    record = run_record(services.scores_url, "segments", "it__segments")
    assert record is not None
    assert (record["status"], record["rows_written"], record["rows_rejected"]) == ("success", len(rows), 0)
    assert record["score_summary"]["labels"] == expected.value_counts().to_dict()
    assert record["score_summary"]["mean"] is None
    assert record["drift_status"] == "ok"


def test_the_training_windows_are_the_warehouses_oldest_days(demo_registry: str) -> None:
    """The demo scores recent days; its models learnt from the first ones, so no scored day was trained on."""
    first = datetime.combine(WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS), datetime.min.time(), tzinfo=UTC)
    for name in ("churn", "spend", "segments"):
        training = champion(demo_registry, name).training
        assert datetime.fromisoformat(training["window_start"]) == first
        assert datetime.fromisoformat(training["window_end"]) <= first + timedelta(days=2)


def test_the_demos_old_windows_are_past_the_outcomes_horizon() -> None:
    first, last = run.old_windows(date(2026, 12, 1), 60) or (None, None)
    assert (first, last) == (date(2026, 10, 29), date(2026, 10, 31))  # [10-31, 11-01) + 30d: complete at 12-01
    assert run.old_windows(date(2026, 12, 1), 33) is None  # the training days, then nothing old enough


def test_the_demo_evaluates_old_windows_and_prints_realised_metrics_beside_the_holdouts(
    services: Services, demo_registry: str
) -> None:
    """The demo's evaluation and summary lines, on copies of churn and spend writing tables of their own."""
    from sklearn.metrics import mean_squared_error, roc_auc_score

    from batchscore.local.demo.report import performance_lines

    configs = []
    for name in run.EVALUATED:
        config = load_config(REPO / "include" / "pipelines" / f"{name}.yaml")
        output = config.output.model_copy(update={"table": f"scoring.demo_{name}_scores"})
        configs.append(config.model_copy(update={"name": f"demo_{name}", "output": output}))
    endpoints = Endpoints(services.warehouse_url, services.scores_url, demo_registry)
    first, last = WAREHOUSE_END - timedelta(days=4), WAREHOUSE_END - timedelta(days=3)
    windows = [Window(*day_window(day)) for day in (first, last)]
    for config in configs:
        for window in windows:
            run_pipeline(config, endpoints, window=window, run_id=f"it__{config.name}_{window.slug}")
    too_soon = run.evaluate_windows(configs, endpoints, first, last, now=windows[0].end + timedelta(days=29))
    assert all(r.endswith("nothing evaluated") and "are complete at" in r for r in too_soon["demo_churn"])
    judged = run.evaluate_windows(configs, endpoints, first, last, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert judged == {"demo_churn": ["evaluated", "evaluated"], "demo_spend": ["evaluated", "evaluated"]}

    registry = ModelRegistry(demo_registry)
    with psycopg.connect(db.libpq_url(services.scores_url)) as conn:
        churn_lines = performance_lines(conn, registry, configs[0], "classifier")
        spend_lines = performance_lines(conn, registry, configs[1], "regressor")
    assert "ROC AUC   holdout  log loss   holdout" in churn_lines[2]
    assert "     RMSE   holdout       MAE   holdout" in spend_lines[2]
    for day, churn_line, spend_line in zip((last, first), churn_lines[3:], spend_lines[3:], strict=True):
        window = Window(*day_window(day))
        outcomes = window_rows(services.warehouse_url, window.start, window.end).set_index("customer_id")
        churn = stored_scores(services.scores_url, "scoring.demo_churn_scores", window.start, window.end)
        spend = stored_scores(services.scores_url, "scoring.demo_spend_scores", window.start, window.end)
        # Other tests of the session add rows (NULL features, NULL outcomes) to these days: an entity
        # without an outcome is counted, not scored against, as the evaluation does.
        churned = outcomes.loc[churn.index, "churned"].dropna()
        spent = outcomes.loc[spend.index, "spend_next_30d"].dropna()
        auc = roc_auc_score(churned.astype(int), churn.loc[churned.index, "score"])
        rmse = mean_squared_error(spent, spend.loc[spent.index, "score"]) ** 0.5
        churn_fields, spend_fields = churn_line.split(), spend_line.split()
        assert churn_fields[:3] == [f"{day}", f"{len(churned):,}", f"{len(churn) - len(churned):,}"]
        assert spend_fields[:3] == [f"{day}", f"{len(spent):,}", f"{len(spend) - len(spent):,}"]
        assert float(churn_fields[3]) == pytest.approx(auc, abs=5e-5)
        assert float(churn_fields[4]) == pytest.approx(
            champion(demo_registry, "churn").metrics["holdout_roc_auc"], abs=5e-5
        )
        assert float(spend_fields[3]) == pytest.approx(rmse, abs=5e-3)
        assert float(spend_fields[4]) == pytest.approx(
            champion(demo_registry, "spend").metrics["holdout_rmse"], abs=5e-3
        )
        assert churn_line.endswith("churn v1")
