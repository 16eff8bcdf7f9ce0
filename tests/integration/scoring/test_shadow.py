"""Champion/challenger shadow scoring: one extract, two scores tables published (or withheld) together."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.model_config import ShadowConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, PlanError
from batchscore.scoring.drift import SCORE
from batchscore.sink.publish import RejectThresholdExceeded
from tests.conftest import CHALLENGER, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, expected_scores, run_record, stored_scores
from tests.unit.scoring.test_drift import independent_psi

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=6)))


@pytest.fixture(scope="module")
def challenger(services: Services) -> str:
    """A second churn model (fewer boosting rounds, so its scores differ), registered as 'challenger' by the session."""
    return CHALLENGER


def shadowed(name: str, **validation: object) -> PipelineConfig:
    """churn under ``name`` with the challenger in shadow."""
    config = churn_variant(name, churn_config().source.query, **validation)
    return config.model_copy(update={"shadow": ShadowConfig(name=CHALLENGER, version="challenger")})


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


@pytest.mark.parametrize("slices", [1, 3])
def test_challenger_scores_are_its_own_predict_and_published_with_the_champions(
    services: Services, challenger: str, slices: int
) -> None:
    config = shadowed(f"churn_shadow_{slices}")
    run_id = f"it__shadow_{slices}"
    run_pipeline(config, endpoints(services), window=WINDOW, run_id=run_id, max_slices=slices)
    champion, rejected = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    theirs, _ = expected_scores(
        services.warehouse_url, services.registry, WINDOW.start, WINDOW.end, (challenger, "challenger")
    )
    stored = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    shadow = stored_scores(services.scores_url, config.shadow_table, WINDOW.start, WINDOW.end)
    assert set(shadow.index) == set(stored.index) == set(champion.index)
    np.testing.assert_allclose(shadow.loc[theirs.index, "score"], theirs["score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(stored.loc[champion.index, "score"], champion["score"], rtol=0, atol=1e-12)
    manifest = ModelRegistry(services.registry).resolve(challenger, "challenger")
    assert set(shadow["model_name"]) == {challenger}
    assert set(shadow["model_sha256"]) == {manifest.sha256}
    assert set(shadow["run_id"]) == {run_id}
    assert not np.allclose(shadow.loc[theirs.index, "score"], stored.loc[theirs.index, "score"])

    record = run_record(services.scores_url, config.name, run_id)
    assert record is not None
    assert record["status"] == "success"
    got = record["shadow"]
    assert (got["model_name"], got["model_version"], got["table"]) == (
        challenger,
        manifest.version,
        config.shadow_table,
    )
    assert (got["rows_scored"], got["rows"], got["published"]) == (len(theirs), len(theirs), True)
    # Agreement, recomputed here from the two models' own predictions.
    ours = stored.loc[theirs.index]
    assert got["mean_abs_diff"] == pytest.approx(float(np.abs(ours["score"] - theirs["score"]).mean()), rel=1e-9)
    assert got["label_agreement"] == pytest.approx(float((ours["label"] == shadow.loc[theirs.index, "label"]).mean()))
    champion_manifest = ModelRegistry(services.registry).resolve("churn", "champion")
    edges = next(b["edges"] for b in champion_manifest.reference["bins"] if b["column"] == SCORE)  # type: ignore[index]

    def fractions(values: pd.Series) -> pd.Series:
        cut = pd.cut(values, [-np.inf, *edges, np.inf], right=True).value_counts(sort=False)
        return pd.Series([*cut.to_numpy().tolist(), 0], dtype=float) / len(values)

    expected_psi = independent_psi(fractions(theirs["score"]), fractions(ours["score"]))
    assert got["psi"] == pytest.approx(expected_psi, rel=1e-9)
    assert len(rejected) > 0


def test_challenger_scores_are_withheld_with_the_champions(services: Services, challenger: str) -> None:
    config = shadowed("churn_shadow_held")
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__shadow_held_1")
    before = stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end)
    shadow_before = stored_scores(services.scores_url, config.shadow_table, WINDOW.start, WINDOW.end)
    strict = shadowed("churn_shadow_held", max_reject_fraction=0.0)  # the window has rejects: nothing publishes
    with pytest.raises(RejectThresholdExceeded):
        run_pipeline(strict, endpoints(services), window=WINDOW, run_id="it__shadow_held_2")
    pd.testing.assert_frame_equal(
        stored_scores(services.scores_url, config.output.table, WINDOW.start, WINDOW.end), before
    )
    pd.testing.assert_frame_equal(
        stored_scores(services.scores_url, config.shadow_table, WINDOW.start, WINDOW.end), shadow_before
    )
    record = run_record(services.scores_url, config.name, "it__shadow_held_2")
    assert record is not None
    assert record["shadow"]["published"] is False
    assert record["status"] == "failed"


def test_a_challenger_that_cannot_be_compared_fails_in_plan(services: Services, challenger: str) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from batchscore.models.intake import features_of

    registry = ModelRegistry(services.registry)
    frame = pd.DataFrame({"tenure_days": np.arange(10.0), "extra_signal": np.arange(10.0) % 3})
    regressor = LinearRegression().fit(frame[["tenure_days"]], np.arange(10.0))
    registry.register("churn_regressor", regressor, features_of(regressor), aliases=("challenger",))
    wider = LogisticRegression().fit(frame, np.arange(10) % 2)
    registry.register("churn_wider", wider, features_of(wider), aliases=("challenger",))
    for name, error in (
        ("churn_regressor", "is a regressor; the champion churn v1 is a classifier: their scores cannot be compared"),
        ("churn_wider", "needs extra_signal, which pipeline churn_shadow_bad does not list"),
    ):
        config = shadowed("churn_shadow_bad").model_copy(
            update={"shadow": ShadowConfig(name=name, version="challenger")}
        )
        with pytest.raises(PlanError, match=error):
            run_pipeline(config, endpoints(services), window=WINDOW, run_id=f"it__shadow_bad_{name}")
        assert stored_scores(services.scores_url, config.shadow_table, WINDOW.start, WINDOW.end).empty
