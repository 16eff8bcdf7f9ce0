"""``batchscore models which``: the model version, artifact and run behind one entity's score on one day."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchscore.cli import main
from batchscore.job import run_pipeline
from batchscore.planning import Endpoints
from batchscore.registry import ModelRegistry
from batchscore.windows import Window
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
