"""A whole run in this process: plan, every slice, publish (the command line's, the demo's and the bench's path)."""

from __future__ import annotations

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.failures import fail_run
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.publish import PublishResult


def run_pipeline(
    config: PipelineConfig,
    endpoints: Endpoints,
    *,
    window: Window,
    run_id: str,
    model_ref: str | None = None,
    dry_run: bool = False,
    parallel: int | None = None,
    max_slices: int = 1,
    allow_shrink: bool = False,
) -> PublishResult:
    """All stages in this process (the command line's and the benchmark's path).

    The same functions as the DAG's tasks. In one process a window is best read as one
    slice (``max_slices=1``: one pass over the source, every core on it through the
    runner's threads); more slices are scored one after the other.
    """
    stage = "plan"
    try:
        plan = plan_run(
            config,
            endpoints,
            window=window,
            run_id=run_id,
            model_ref=model_ref,
            dry_run=dry_run,
            max_slices=max_slices,
            preload=True,
            allow_shrink=allow_shrink,
        )
        stage = "score_slice"
        results = [score_slice(config, endpoints, plan, s, workers=parallel) for s in plan.key_slices]
        stage = "publish"
        return publish_run(config, endpoints, plan, results)
    except BaseException as exc:
        fail_run(config, endpoints, run_id, exc, stage=stage, window=window)
        raise
