"""Airflow settings that let a small window's tasks follow one another quickly, with what each costs idle.

A run is plan -> score_slice (mapped) -> publish, so a window crosses the scheduler four
times: the run is started, then each task is scheduled once the one before it succeeded, then
the run is marked done. Airflow 3.3.2's scheduler loop (``SchedulerJobRunner._run_scheduler_loop``)
runs again at once after a loop that queued a task or read an executor event, and otherwise
sleeps ``[scheduler] scheduler_idle_sleep_time`` (1 s by default). A task that succeeds while
the scheduler sleeps waits out the rest of that sleep: about half of it on average per
crossing, 2.2 s of a 6.1 s 100k-row window measured with the default (docs/performance.md,
"A small window through the DAG").

Measured idle on this 2-core machine (``scripts/benchkit/scheduler_idle.py``, 60 s each, nothing
running here, load average 1-3 from other work; the scheduler's process group, which includes the
LocalExecutor's workers and their forkserver), two rounds: 2.5-3.0% of one core at 1 s, 4.9% at
0.5 s, 8.8-10.2% at 0.25 s, 17.9% at 0.1 s. Each idle loop costs about 25 ms of CPU (about eight
small queries on the metadata database), so the sleep trades latency for idle cost: 0.25 s took
1.5-2 s off a small window for about 7% more of one core while nothing runs.
"""

from __future__ import annotations

# Seconds an idle scheduler loop sleeps before it looks again (Airflow's default: 1).
SCHEDULER_IDLE_SLEEP_SECONDS = 0.25


def airflow_settings() -> dict[str, str]:
    """The settings, as the environment variables every process of the stack gets."""
    return {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(SCHEDULER_IDLE_SLEEP_SECONDS)}
