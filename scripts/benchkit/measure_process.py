"""Measuring one process: its tree's peak RSS, the machine's busy cores, its threads' CPU by role."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import subprocess

    import psutil

POLL_SECONDS = 0.05


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (PostgreSQL included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cores_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were busy on average between two ``machine_jiffies`` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * (os.cpu_count() or 1) if total else math.nan


class ThreadCpu:
    """This process's threads' CPU seconds during the run, by role (from the thread's name).

    Threads come and go (the scoring pool's end with the run), so /proc/self/task is read
    every 100 ms and each thread's last reading kept; CPU spent before (imports) is subtracted.
    """

    ROLES: ClassVar[dict[str, str]] = {
        "extract": "extract",
        "copy-out": "copy-out",  # the COPY decoder's thread: psycopg2's transport and the decoding
        "MainThread": "plan+load",
        "warm-up": "warm-up",
    }

    def __init__(self) -> None:
        import threading

        self._tick = os.sysconf("SC_CLK_TCK")
        self._cpu: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._sample()
        self._before = dict(self._cpu)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import threading

        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._names[thread.native_id] = thread.name
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                self._cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / self._tick

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per role: extract, predict (the scoring threads), plan+load (main), warm-up, other."""
        self._stop.set()
        self._thread.join()
        self._sample()
        roles: dict[str, float] = {}
        for tid, cpu in self._cpu.items():
            name = self._names.get(tid, "")
            if name == "bench-sampler":
                continue
            role = self.ROLES.get(name, "predict" if name.startswith("predict") else "other")
            roles[role] = roles.get(role, 0.0) + cpu - self._before.get(tid, 0.0)
        return {role: round(cpu, 2) for role, cpu in sorted(roles.items())}


def tree_rss(root: psutil.Process) -> int:
    """Sum of RSS over a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # it exited meanwhile
            total += proc.memory_info().rss
    return total


def wait_with_peak_rss(proc: subprocess.Popen[bytes]) -> int:
    """Poll the worker's process tree every ~50 ms until it exits; return the peak summed RSS in bytes."""
    import psutil

    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(root))
        time.sleep(POLL_SECONDS)
    return peak
