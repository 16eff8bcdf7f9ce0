"""A scoring task's imports, done once in the scheduler's forkserver so that every task process starts warm.

Each Airflow task runs in a fresh process. Before its first scored row a slice task imports
scikit-learn, skops, numba, the ADBC driver and the engine. That is about 3.5 CPU-seconds
here, most of a nightly 100k-row window's task.

Airflow 3.3's LocalExecutor starts its workers with the component's multiprocessing start
method. With ``[scheduler] mp_start_method = forkserver`` and
``[scheduler] mp_forkserver_preload = batchscore.airflow.warm_start``, the forkserver
imports this module once. Every worker it forks, and every task process a worker forks,
then inherits these modules copy-on-write, so a task only reads and checks its model.
The local stack and docker-compose.yaml set both options.

The order matters. skops is imported first, while few modules are loaded: at import it
finds the module of every SciPy ufunc by a ``getattr`` on every loaded module, which costs
about 0.9 CPU-s before Airflow is imported and 2.5 after.

Nothing here opens a connection or starts a thread (a forked child would inherit neither
safely). Loading a model stays per task, checked against its sha256 as before.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time

log = logging.getLogger(__name__)

# In this order: skops before Airflow (see above); the engine, then what a task process loads
# before its task runs (the Task SDK's runner, and the plugins, whose list the SDK caches).
# Each module with the function, if any, that finishes its warm-up once it is imported.
MODULES: tuple[tuple[str, str | None], ...] = (
    ("batchscore.models.registry", "skops_io"),  # scikit-learn's estimators too: skops imports each to trust it
    ("adbc_driver_postgresql.dbapi", None),
    ("batchscore.scoring.compiled_trees", "load_kernels"),  # numba's cached machine code, read once
    ("batchscore.source.copy_stream", "warm_up"),  # the COPY decoder and its libpq loop (ADBC above: the fallback)
    ("batchscore.run.stages", None),
    ("batchscore.airflow.dag_factory", None),
    ("airflow.sdk.execution_time.task_runner", None),
)


def warm() -> list[str]:
    """Import what a scoring task needs; the modules that failed (each logged), never an exception.

    A forkserver whose preload raises anything but ImportError dies, and the scheduler's
    executor with it; a module that cannot be imported here is only imported later, cold.
    """
    failed = []
    started = time.process_time()
    for name, finish in MODULES:
        try:
            module = importlib.import_module(name)
            if finish:
                getattr(module, finish)()
        except Exception:
            log.exception("warm start: %s was not preloaded; each task imports it itself", name)
            failed.append(name)
    try:
        from airflow.sdk.plugins_manager import integrate_macros_plugins

        integrate_macros_plugins()  # loads the plugins once; the Task SDK caches them for every forked task
    except Exception:
        log.exception("warm start: the plugins were not preloaded")
        failed.append("plugins")
    # The preloaded objects move to the permanent generation: no collection in a forked task walks
    # them (each walk writes to every inherited page; a plain process's exit after a slice took 2 s of it).
    gc.freeze()
    log.info("warm start: preloaded the scoring stack in %.1f CPU-s", time.process_time() - started)
    return failed


warm()
