"""What an idle Airflow scheduler costs: CPU % of its process group over a minute, per setting.

Starts the bench's local stack (its metadata in the bench database, no run triggered) once per
value of ``[scheduler] scheduler_idle_sleep_time`` and samples the CPU seconds of the
scheduler's process group (the scheduler, its LocalExecutor workers and their forkserver) and of
the api-server and dag-processor, after a settling pause:

    .venv/bin/python scripts/benchkit/scheduler_idle.py --sleep 1,0.25,0.1 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchscore.local.embedded_pg import free_ports
from batchscore.local.services import group_cpu_seconds
from batchscore.local.stack import LocalStack
from benchkit.data import BENCH_DIR, DATABASE, REGISTRY, start_server

SAMPLED = ("scheduler", "api-server", "dag-processor")


def idle_cpu(url: str, sleep: str, seconds: float, settle: float) -> dict[str, float]:
    """CPU % of one core per service over ``seconds`` of an idle stack with this idle sleep."""
    os.environ.update(  # the bench pipeline's DAG, as bench.py --through-airflow declares it
        {
            "BATCHSCORE_PIPELINES_DIR": str(BENCH_DIR / "pipelines"),
            "BATCHSCORE_MODEL_REGISTRY": str(REGISTRY),
            "AIRFLOW_CONN_BENCH_DB": url,
        }
    )
    api_port, log_port = free_ports(2)
    stack = LocalStack(
        root=BENCH_DIR,
        external_url=url,
        api_port=api_port,
        log_port=log_port,
        dags_dir=BENCH_DIR / "dags",
        airflow_overrides={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": sleep},
    )
    stack.migrate()
    stack.start_services()
    try:
        time.sleep(settle)
        leaders = {name: int((stack.home / f"{name}.pid").read_text()) for name in SAMPLED}
        before = {name: group_cpu_seconds(pid) for name, pid in leaders.items()}
        time.sleep(seconds)
        return {name: 100 * (group_cpu_seconds(pid) - before[name]) / seconds for name, pid in leaders.items()}
    finally:
        stack.stop_services()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", default="1,0.1", help="values of scheduler_idle_sleep_time, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait after the stack is healthy")
    ns = parser.parse_args()
    pg = start_server()
    url = pg.url(DATABASE)
    for sleep in ns.sleep.split(","):
        cpu = idle_cpu(url, sleep, ns.seconds, ns.settle)
        parts = ", ".join(f"{name} {pct:.1f}%" for name, pct in cpu.items())
        print(f"scheduler_idle_sleep_time={sleep}: CPU over {ns.seconds:.0f}s idle: {parts}", flush=True)


if __name__ == "__main__":
    main()
