"""``batchscore models which``: the model version, artifact and run behind one entity's score on one day."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from batchscore.cli.main import main
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, stored_scores

pytestmark = pytest.mark.integration


def test_which_names_the_model_artifact_and_run(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    window = Window(*day_window(WAREHOUSE_END - timedelta(days=3)))
    endpoints = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    run_pipeline(churn_config(), endpoints, window=window, run_id="it__which")
    stored = stored_scores(services.scores_url, "scoring.churn_scores", window.start, window.end)
    key = int(stored.index[0])
    manifest = ModelRegistry(services.registry).resolve("churn", "champion")
    args = ["--pipeline", "churn", "--key", str(key), "--date", f"{window.start:%Y-%m-%d}"]
    assert main(["models", "which", *args, "--scores-url", services.scores_url]) == 0
    out = capsys.readouterr().out
    assert f"customer_id {key} window [{window.start:%Y-%m-%d} 00:00" in out
    assert f"model churn v{manifest.version} sha256 {manifest.sha256}; Airflow run it__which" in out
    assert (
        main(
            [
                "models",
                "which",
                "--pipeline",
                "churn",
                "--key",
                "-1",
                "--date",
                f"{window.start:%Y-%m-%d}",
                "--scores-url",
                services.scores_url,
            ]
        )
        == 0
    )
    assert "no score for customer_id -1" in capsys.readouterr().out


def test_a_promote_after_plan_does_not_change_the_planned_runs_model(services: Services) -> None:
    from datetime import UTC, datetime

    from batchscore.local.demo.model import train_and_register
    from batchscore.run.planning import plan_run
    from batchscore.run.publish_stage import publish_run
    from batchscore.run.stages import score_slice
    from tests.conftest import CHALLENGER, TRAIN_WINDOW_DAYS, WAREHOUSE_DAYS
    from tests.integration.helpers import churn_variant, expected_scores

    window = Window(*day_window(WAREHOUSE_END - timedelta(days=5)))
    endpoints = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    base = churn_variant("churn_promoted", churn_config().source.query)
    config = base.model_copy(
        update={"model": base.model.model_copy(update={"name": CHALLENGER, "version": "challenger"})}
    )
    registry = ModelRegistry(services.registry)
    planned = registry.resolve(CHALLENGER, "challenger")
    plan = plan_run(config, endpoints, window=window, run_id="it__promote_after_plan")
    expected, _ = expected_scores(
        services.warehouse_url, services.registry, window.start, window.end, (CHALLENGER, "challenger")
    )

    first = datetime.combine(WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS), datetime.min.time(), tzinfo=UTC)
    newer = train_and_register(
        services.warehouse_url,
        services.registry,
        train=Window(first, first + timedelta(days=TRAIN_WINDOW_DAYS)),
        name=CHALLENGER,
        max_iter=8,
        aliases=(),
    )
    try:
        registry.promote(CHALLENGER, "challenger", newer.version)  # between plan and the slices
        results = [score_slice(config, endpoints, plan, s) for s in plan.key_slices]
        publish_run(config, endpoints, plan, results)
    finally:
        registry.promote(CHALLENGER, "challenger", planned.version)
    stored = stored_scores(services.scores_url, config.output.table, window.start, window.end)
    assert set(stored["model_version"]) == {planned.version} != {newer.version}
    assert set(stored["model_sha256"]) == {planned.sha256}
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
