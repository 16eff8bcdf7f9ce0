"""The stack's Airflow latency settings reach Airflow, and a test's own override still wins."""

from pathlib import Path

import pytest

from batchscore.local.airflow_settings import SCHEDULER_IDLE_SLEEP_SECONDS, airflow_settings

IDLE_SLEEP = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"


def test_the_stack_sets_the_idle_sleep_and_airflow_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.configuration import conf

    from batchscore.local.stack import LocalStack

    env = LocalStack(root=tmp_path, external_url="postgresql://u@/db?host=/nowhere").env()
    assert env[IDLE_SLEEP] == "0.25" == str(SCHEDULER_IDLE_SLEEP_SECONDS)
    monkeypatch.delenv(IDLE_SLEEP, raising=False)
    default = conf.getfloat("scheduler", "scheduler_idle_sleep_time")
    monkeypatch.setenv(IDLE_SLEEP, env[IDLE_SLEEP])
    # What SchedulerJobRunner.__init__ reads into _scheduler_idle_sleep_time.
    assert (default, conf.getfloat("scheduler", "scheduler_idle_sleep_time")) == (1.0, 0.25)


def test_an_override_wins_over_the_latency_settings(tmp_path: Path) -> None:
    from batchscore.local.stack import LocalStack

    stack = LocalStack(
        root=tmp_path, external_url="postgresql://u@/db?host=/nowhere", airflow_overrides={IDLE_SLEEP: "1"}
    )
    assert stack.env()[IDLE_SLEEP] == "1"
    assert set(airflow_settings()) == {IDLE_SLEEP}
