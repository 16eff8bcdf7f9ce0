"""The preloading forkserver starts with the scheduler's job, and never from anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.unit.plugins.test_scoring_ui import PLUGINS

PROBE = textwrap.dedent(
    """
    import multiprocessing, os, time
    from multiprocessing import forkserver

    if __name__ == "__main__":
        from airflow.jobs.job import Job
        from batchscore.airflow.forkserver_start import on_starting

        on_starting(Job.__new__(Job))  # the platform's start method (fork): nothing starts
        unset = forkserver._forkserver._forkserver_pid
        multiprocessing.set_start_method("forkserver", force=True)
        multiprocessing.set_forkserver_preload(["json"])  # any list: test_warm_start checks the preload
        on_starting(object())  # a task process's component is no job: nothing starts
        not_a_job = forkserver._forkserver._forkserver_pid
        began = time.monotonic()
        on_starting(Job.__new__(Job))  # the scheduler's job: the forkserver starts, preloading apart
        returned = time.monotonic() - began
        started = forkserver._forkserver._forkserver_pid
        print(unset, not_a_job, started is not None and os.path.exists(f"/proc/{started}"), returned < 2)
    """
)


def test_the_scheduler_job_starts_the_forkserver_at_once_and_nothing_else_does(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"  # a file: the forkserver's children import their target from __main__'s path
    script.write_text(PROBE)
    env = {"AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Not started for a non-forkserver job nor for a task; started (without waiting for its preload)
    # for the scheduler's.
    assert done.stdout.split()[-4:] == ["None", "None", "True", "True"]
