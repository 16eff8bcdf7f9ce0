"""The in-process runner: read, score and load one slice at the same time, on threads.

A reader thread pulls record batches from the source and hands each to a pool of scoring
threads; the caller consumes the results in order (here: the bulk load's COPY stream).
At most ``in_flight`` batches are read ahead, so memory is bounded by the batch size and
the pool, never by the slice. Reading (binary COPY decode in C), scoring (numpy, OpenMP,
the compiled tree walk: all release the GIL) and loading overlap, which is what keeps
every core of a worker busy on one slice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")
_POLL_SECONDS = 0.2


@dataclass
class ReadStats:
    """How long the source took to give its items, when the first arrived (perf_counter), the reading CPU.

    ``seconds`` is the reader's waits for items, or the source's own time when it reads ahead on a
    thread of its own (a small window's rows may all be queued before the reader first asks).
    """

    seconds: float = 0.0
    items: int = 0
    first_at: float | None = None
    cpu_seconds: float = 0.0  # the reader's CPU (and its source's COPY thread's), set when it ends


@dataclass
class _End:
    error: BaseException | None = None


@dataclass
class Overlapped(Generic[In, Out]):
    """``work`` applied to every item of ``source`` on ``workers`` threads; iterate for results in order."""

    source: Iterator[In]
    work: Callable[[In], Out]
    workers: int
    in_flight: int = 0
    initializer: Callable[[], object] | None = None
    read: ReadStats = field(default_factory=ReadStats)

    def __iter__(self) -> Iterator[Out]:
        in_flight = self.in_flight or 2 * self.workers
        pending: queue.Queue[Future[Out] | _End] = queue.Queue(maxsize=in_flight)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="score", initializer=self.initializer)

        def put(item: Future[Out] | _End) -> bool:
            while not stop.is_set():
                try:
                    pending.put(item, timeout=_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            end = _End()
            cpu = time.thread_time()
            try:
                while not stop.is_set():
                    waited = time.perf_counter()
                    try:
                        item = next(self.source)
                    except StopIteration:
                        break
                    now = time.perf_counter()
                    self.read.seconds += now - waited
                    self.read.items += 1
                    if self.read.first_at is None:
                        self.read.first_at = now
                    if not put(pool.submit(self.work, item)):
                        break
            except BaseException as exc:
                end.error = exc
            finally:
                close = getattr(self.source, "close", None)
                if close is not None:
                    close()
                # A source that decodes on a thread of its own (the COPY decoder) reports that thread's CPU,
                # and how long it took to give its rows (they may all be queued before the first wait here).
                self.read.cpu_seconds = time.thread_time() - cpu + float(getattr(self.source, "cpu_seconds", 0.0))
                self.read.seconds = max(self.read.seconds, float(getattr(self.source, "seconds", 0.0)))
                put(end)

        reader = threading.Thread(target=read, name="extract", daemon=True)
        reader.start()
        try:
            while True:
                got = pending.get()
                if isinstance(got, _End):
                    if got.error is not None:
                        raise got.error
                    return
                yield got.result()
        finally:
            stop.set()
            while True:  # unblock the reader, cancel what was read ahead
                try:
                    left = pending.get_nowait()
                except queue.Empty:
                    break
                if isinstance(left, Future):
                    left.cancel()
            reader.join()
            pool.shutdown(wait=True, cancel_futures=True)
