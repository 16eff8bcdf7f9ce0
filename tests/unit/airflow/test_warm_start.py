"""The scheduler's forkserver preloads the scoring stack, so every task process it forks starts warm."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.plugins.test_scoring_ui import PLUGINS

WARM = ("skops.io", "numba", "adbc_driver_postgresql.dbapi", "batchscore.run.stages", "sklearn.ensemble")


def test_a_process_forked_from_the_preloading_forkserver_has_the_scoring_stack_imported(tmp_path: Path) -> None:
    # A fresh interpreter: the forkserver is one per process, and its preload is read when it starts.
    probe = textwrap.dedent(
        f"""
        import multiprocessing, sys

        def child(queue):
            from batchscore.run.stages import WARM_MODULE
            import gc  # the preloaded objects are frozen: no collection in a task walks the inherited heap

            frozen = gc.get_freeze_count() > 0
            queue.put([name in sys.modules for name in {WARM!r}] + [WARM_MODULE in sys.modules, frozen])

        if __name__ == "__main__":
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["batchscore.airflow.warm_start"])
            queue = context.Queue()
            process = context.Process(target=child, args=(queue,))
            process.start()
            print(queue.get(timeout=240))
            process.join(60)
            print("parent", "skops.io" in sys.modules)
        """
    )
    env = {"AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    script = tmp_path / "probe.py"  # a file: the forkserver's children import their target from __main__'s path
    script.write_text(probe)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, **env},
    )
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == str([True] * (len(WARM) + 2)), done.stderr[-2000:]
    assert lines[-1] == "parent False"  # the stack lives in the forkserver, not in the scheduler itself


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_module_that_cannot_be_preloaded_is_logged_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchscore.airflow import warm_start

    monkeypatch.setattr(warm_start, "MODULES", (("batchscore.no_such_module", None), ("batchscore.run.stages", None)))
    kept = _Kept()
    warm_start.log.addHandler(kept)  # Airflow's logging set-up stops propagation to pytest's capture
    try:
        failed = warm_start.warm()  # a forkserver whose preload raised would take the executor down with it
    finally:
        warm_start.log.removeHandler(kept)
    assert failed[0] == "batchscore.no_such_module"
    assert "batchscore.run.stages" not in failed
    assert "warm start: batchscore.no_such_module was not preloaded; each task imports it itself" in kept.messages
