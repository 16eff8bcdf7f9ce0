"""The in-process runner: results in order, bounded read-ahead, errors surface, the source is closed."""

import threading
import time
from collections.abc import Iterator

import pytest

from batchscore.run.runner import Overlapped


class Source:
    """A generator-like source that records how far it was read and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.read, self.closed = n, fail_at, 0, False

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.read == self.fail_at:
            raise ConnectionError("source went away")
        if self.read >= self.n:
            raise StopIteration
        self.read += 1
        return self.read - 1

    def close(self) -> None:
        self.closed = True


def test_results_come_in_order_from_several_threads() -> None:
    threads: set[str] = set()

    def work(i: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.001 * (i % 3))  # later items may finish first
        return i * i

    source = Source(200)
    stream = Overlapped(source=source, work=work, workers=3)
    assert list(stream) == [i * i for i in range(200)]
    assert stream.read.items == 200
    assert source.closed
    assert len(threads) > 1


def test_read_ahead_is_bounded_when_the_consumer_is_slow() -> None:
    source = Source(1_000)
    stream = iter(Overlapped(source=source, work=lambda i: i, workers=2, in_flight=4))
    assert next(stream) == 0
    time.sleep(0.3)
    assert source.read <= 1 + 4 + 2  # one consumed, the queue, one in the reader's hands (and slack)
    stream.close()  # the consumer stops early: the reader stops and the source is closed
    assert source.closed


def test_a_source_error_is_raised_to_the_consumer() -> None:
    source = Source(100, fail_at=10)
    with pytest.raises(ConnectionError, match="source went away"):
        list(Overlapped(source=source, work=lambda i: i, workers=2))
    assert source.closed


def test_a_work_error_is_raised_to_the_consumer_and_stops_the_reader() -> None:
    def work(i: int) -> int:
        if i == 5:
            raise ValueError("bad batch")
        return i

    source = Source(10_000)
    with pytest.raises(ValueError, match="bad batch"):
        list(Overlapped(source=source, work=work, workers=2, in_flight=4))
    assert source.closed
    assert source.read < 10_000
