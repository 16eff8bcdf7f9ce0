"""Start the scheduler's preloading forkserver when the scheduler starts, not when its first task does.

With ``[scheduler] mp_start_method = forkserver`` (the local stack), Python starts the
forkserver at the LocalExecutor's first worker, so the preload of
:mod:`batchscore.airflow.warm_start` (about 6 CPU-s) was paid by the first run after every
scheduler start: 16-23 s for a 100k-row window that takes 4 s steady. An Airflow listener's
``on_starting`` runs in every job (scheduler, triggerer, dag-processor) right after the
scheduler set its start method and preload list; here it asks Python to start that forkserver
at once. ``ensure_running`` only spawns the server (the preload then runs in the server,
beside the scheduler's own start-up): the scheduler does not wait for it.

Nothing happens in a job whose start method is not forkserver, nor in a task process (its
component is not a job), so no second forkserver is ever started.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def on_starting(component: Any) -> None:
    """An Airflow job starts: if it forks its workers from a forkserver, start that forkserver now."""
    jobs = sys.modules.get("airflow.jobs.job")  # never imported here: a task process has no business with it
    if jobs is None or not isinstance(component, jobs.Job):
        return
    if multiprocessing.get_start_method(allow_none=True) != "forkserver":
        return
    from multiprocessing import forkserver

    try:
        forkserver.ensure_running()
    except OSError:  # never stop a scheduler for it: the first worker starts the forkserver as before
        log.exception("could not start the preloading forkserver early; the first task starts it")
        return
    log.info("started the preloading forkserver with the scheduler")
