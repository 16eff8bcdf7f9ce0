"""The churn Pipeline's steps run over the engine's Arrow batches; its stored scores stay its own predict_proba."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from batchscore.scoring.predict import scorer
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, churn_variant, model_input, stored_scores, window_rows

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=9)))


def test_unseen_categories_scored_through_the_arrow_steps_equal_predict_proba(services: Services) -> None:
    """Unseen regions reach the one-hot encoder (handle_unknown='ignore'), NULL channels its imputer."""
    registry = ModelRegistry(services.registry)
    manifest = registry.resolve("churn", "champion")
    model = registry.load(manifest)
    fast = scorer(model, manifest)
    assert fast.reads_arrow  # the ColumnTransformer is computed from Arrow, not in scikit-learn

    config = churn_variant("churn_arrow", churn_config().source.query, unseen_categories="score")
    config = config.model_copy(update={"validation": config.validation.model_copy(update={"max_reject_fraction": 1})})
    endpoints = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    run_pipeline(config, endpoints, window=WINDOW, run_id="it__arrow_steps")

    rows = window_rows(services.warehouse_url, WINDOW.start, WINDOW.end)
    regions = next(f.categories for f in manifest.features if f.name == "region")
    scored = rows[rows["plan"].notna()]  # plan is NOT NULL in the contract: those rows are rejected
    assert (~scored["region"].isin(regions)).sum() > 0  # the window does hold unseen categories
    proba = model.predict_proba(model_input(scored, [f.name for f in manifest.features]))
    expected = proba[:, list(model.classes_).index(1)]
    stored = stored_scores(services.scores_url, "scoring.churn_arrow_scores", WINDOW.start, WINDOW.end)
    assert len(stored) == len(scored) > 2_000
    np.testing.assert_array_equal(stored.loc[scored["customer_id"].to_numpy(), "score"].to_numpy(), expected)
