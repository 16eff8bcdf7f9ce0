"""What a run cost in CPU seconds, stage by stage: the cost per prediction batch inference exists to cut.

Measured where the work runs, as CPU time (``time.thread_time`` per thread,
``time.process_time`` per process), so the figures hold on a busy machine where wall
times do not. They count this engine's processes only: the database servers' own work
(serialising COPY out, writing the rows in) is theirs and is not included.

Per slice: ``startup`` (the process's CPU before the slice began: interpreter, imports; in a
process that scores several slices, the CPU since the previous one), ``model`` (loading the
model and building its scorer), ``read`` (the extract thread: decoding the source's stream),
``score`` (the scoring threads: validation, prediction, drift counts), ``load`` (the loading
thread: the COPY into the slice's table, the key check), ``total`` (the whole process during
the slice, which also holds what no stage claims). Per run: those summed, ``publish``, and
rows per CPU second over all of it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

SLICE_STAGES = ("startup", "model", "read", "score", "load", "total")
_charged = [0.0]  # process CPU already charged to a slice (several slices may run in one process)
_charging = threading.Lock()


def process_age() -> float:
    """Seconds since this process started (what a task spent before its first query: start-up, imports)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def uncharged_process_cpu(now: float) -> float:
    """This process's CPU up to ``now`` (a ``process_time``) that no earlier slice was charged with."""
    with _charging:
        return max(0.0, now - _charged[0])


def charge_process_cpu() -> None:
    """A slice has been charged with this process's CPU so far (its start-up and its own work)."""
    with _charging:
        _charged[0] = max(_charged[0], time.process_time())


def timed(work: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """(what ``work`` returned, its thread's CPU seconds, the ``perf_counter`` when it was done)."""
    cpu = time.thread_time()
    result = work(*args)
    return result, time.thread_time() - cpu, time.perf_counter()


@dataclass(frozen=True)
class SliceCpu:
    """One slice's CPU seconds per stage (see the module docstring)."""

    startup: float
    model: float
    read: float
    score: float
    load: float
    total: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(max(0.0, v), 3) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """``startup 1.2 s, model 0.4 s, ...`` for the slice's log line."""
        return ", ".join(f"{k} {v:.2f}s" for k, v in self.to_dict().items())


@dataclass(frozen=True)
class RunCpu:
    """A run's CPU seconds: its slices' stages summed, publish, and rows per CPU second."""

    startup: float
    model: float
    read: float
    score: float
    load: float
    publish: float
    total: float  # every slice's startup and total, plus publish
    rows_per_cpu_second: float | None

    @classmethod
    def of(cls, slices: Iterable[Mapping[str, float] | None], publish: float, rows: int) -> RunCpu:
        """Summed over the slices' ``cpu`` records (a slice from an older worker may have none)."""
        summed = dict.fromkeys(SLICE_STAGES, 0.0)
        for cpu in slices:
            for stage in SLICE_STAGES:
                summed[stage] += float((cpu or {}).get(stage, 0.0))
        total = round(summed["startup"] + summed["total"] + publish, 3)  # rounded once: the rate is of the stored total
        return cls(
            startup=round(summed["startup"], 3),
            model=round(summed["model"], 3),
            read=round(summed["read"], 3),
            score=round(summed["score"], 3),
            load=round(summed["load"], 3),
            publish=round(publish, 3),
            total=total,
            rows_per_cpu_second=round(rows / total, 1) if total > 0 else None,
        )
