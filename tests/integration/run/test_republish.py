"""Publishing a run again (its publish task cleared) after a later run replaced its window: refused, recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchscore.pipeline.windows import Window
from batchscore.run.failures import fail_run
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.publish import SlicesReplaced
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, run_record, stored_scores

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=9)))
PIPELINE = "churn_republish"
TABLE = f"scoring.{PIPELINE}_scores"


def test_a_superseded_runs_publish_cleared_is_refused_and_the_later_scores_stay(services: Services) -> None:
    base = churn_config()
    config = base.model_copy(update={"name": PIPELINE, "output": base.output.model_copy(update={"table": TABLE})})
    endpoints = Endpoints(services.warehouse_url, services.scores_url, services.registry)
    scored = {}
    for run_id in ("it__republish_first", "it__republish_later"):
        plan = plan_run(config, endpoints, window=WINDOW, run_id=run_id)
        scored[run_id] = (plan, [score_slice(config, endpoints, plan, s) for s in plan.key_slices])
        publish_run(config, endpoints, *scored[run_id])
    later = stored_scores(services.scores_url, TABLE, WINDOW.start, WINDOW.end)
    assert set(later["run_id"]) == {"it__republish_later"}

    plan, results = scored["it__republish_first"]
    with pytest.raises(SlicesReplaced, match="have since been replaced by another run's publish") as info:
        publish_run(config, endpoints, plan, results)
    fail_run(config, endpoints, plan.run_id, info.value, stage="publish", window=WINDOW)  # its failure callback

    assert stored_scores(services.scores_url, TABLE, WINDOW.start, WINDOW.end).equals(later)
    record = run_record(services.scores_url, PIPELINE, plan.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "publish")
    assert "clear the run from its plan task" in record["remedy"]
    assert "the window keeps the scores this run published" not in record["error"]
    assert run_record(services.scores_url, PIPELINE, "it__republish_later")["status"] == "success"  # type: ignore[index]
