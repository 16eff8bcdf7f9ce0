"""Recording a failed run: the stage, a one-line cause and its remedy, and what the window holds then."""

from __future__ import annotations

import logging

from batchscore.errors import one_line, remedy_of, root_cause
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.planning import Endpoints
from batchscore.sink import run_record
from batchscore.sink.load import drop_run_slices, published_by

log = logging.getLogger(__name__)


def fail_run(
    config: PipelineConfig,
    endpoints: Endpoints,
    run_id: str,
    error: BaseException | str,
    *,
    stage: str | None = None,
    window: Window | None = None,
) -> None:
    """Record a run as failed (stage, one-line cause, remedy) and drop its unpublished slices.

    Best effort: it never hides ``error``. A run that failed in ``plan`` gets its row here. When
    the window still holds slices this run published before (a cleared task failed again), the
    record says so: the window's scores are this run's earlier ones, untouched.
    """
    cause = error if isinstance(error, str) else root_cause(error)
    try:
        drop_run_slices(endpoints.scores_url, pipeline=config.name, output_table=config.output.table, run_id=run_id)
        if config.shadow is not None:
            drop_run_slices(endpoints.scores_url, pipeline=config.name, output_table=config.shadow_table, run_id=run_id)
        held = published_by(endpoints.scores_url, config.output.table, window, run_id) if window else None
        note = f" (the window keeps the scores this run published at {held:%Y-%m-%d %H:%M:%S %Z})" if held else ""
        run_record.record_failure(
            endpoints.scores_url,
            pipeline=config.name,
            run_id=run_id,
            error=one_line(cause) + note,
            stage=stage,
            remedy=None if isinstance(cause, str) else remedy_of(cause),
            window=window,
            output_table=config.output.table,
        )
    except Exception:
        log.exception("could not record the failure of run %s", run_id)
