"""A PostgreSQL query's rows as Arrow record batches: binary COPY through psycopg2, decoded by our own decoder.

ADBC's decoding of binary COPY cost 1.5-1.7 CPU-s per million rows of the bench table, the
largest part of the extract. Here psycopg2's ``copy_expert`` (libpq in C, the GIL released
while it waits) writes the stream into a 1 MB :class:`io.BufferedWriter` whose raw sink feeds
:class:`~batchscore.source.copy_decoder.CopyDecoder` a megabyte at a time, on a thread of its
own; the decoded batches wait in a queue of two, so a slow consumer stops the COPY (memory
stays bounded by the batch size) instead of piling up rows.

Contract of :func:`copy_batches`: ``None`` when the query's result has a column type the
decoder does not read, or the query cannot be described (the caller then takes the ADBC
path, which raises today's errors); else the schema (ADBC's, field metadata included) and an
iterator of batches. Closing the iterator early cancels the COPY on the server, joins the
thread and closes the connection. A server error mid-stream (a division by zero at row
500k, a cancelled query) raises :class:`SourceReadError`, an ``OSError`` as ADBC's reader
raises, with the server's message and SQLSTATE and never the connection's password.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa

from batchscore import db
from batchscore.source import libpq_copy
from batchscore.source.copy_binary import ColumnPlan, plan_columns
from batchscore.source.copy_decoder import CopyDecoder

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
LIBPQ_DIRECT = True  # False: always psycopg2's copy_expert (the tests run both transports)
QUEUED_BATCHES = 2
_POLL_SECONDS = 0.1
_logged: set[str] = set()
_logged_lock = threading.Lock()
_totals = {"copy_threads": 0.0, "decoding": 0.0}  # CPU seconds of this process's COPY threads, summed


def cpu_totals() -> dict[str, float]:
    """CPU seconds of every COPY thread this process has run: all of it, and the decoder's part (for the bench)."""
    with _logged_lock:
        return dict(_totals)


class SourceReadError(OSError):
    """The source query failed while its rows were streaming (the server's message and SQLSTATE)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Stopped(Exception):
    """Raised into psycopg2's COPY loop when the consumer closed the stream."""


@dataclass
class _Failed:
    error: BaseException


_END = object()


def _log_once(reason: str) -> None:
    with _logged_lock:
        if reason in _logged:
            return
        _logged.add(reason)
    log.info("reading through ADBC instead of the COPY decoder: %s", reason)


def _scrubbed(message: str, url: str) -> str:
    """``message`` without the URL's password (libpq does not echo it; this makes sure)."""
    password = urlsplit(db.libpq_url(url)).password
    for secret in {password, unquote(password)} if password else set():
        message = message.replace(secret, "***")
    return message


class _DecodingSink(io.RawIOBase):
    """The raw end of the COPY's buffered writer: each megabyte is decoded, full batches queued."""

    def __init__(self, decoder: CopyDecoder, put: Any) -> None:
        self._decoder = decoder
        self._put = put
        self.stopped = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.stopped:  # a flush after the stop (the writer's close): discard quietly
            return size
        for batch in self._decoder.feed(data):
            if not self._put(batch):
                self.stopped = True
                raise _Stopped
        return size


class CopyBatches(Iterator[pa.RecordBatch]):
    """The record batches of one binary COPY, decoded on a thread; ``close()`` stops it early."""

    def __init__(self, conn: Any, url: str, statement: Any, plan: ColumnPlan, batch_rows: int) -> None:
        self._conn = conn
        self._url = url
        self._statement = statement
        self._decoder = CopyDecoder(plan, batch_rows, CHUNK_BYTES)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_BATCHES)
        self._stop = threading.Event()
        self._closed = False
        self.cpu_seconds = 0.0  # the COPY thread's CPU (transport and decoding), final once closed
        # The COPY thread's wall time less its waits on a full queue: how long the source took to give
        # its rows (the consumer may find them all queued and wait for none), final once closed.
        self.seconds = 0.0
        self._blocked = 0.0
        self._thread = threading.Thread(target=self._copy, name="copy-out", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        began = time.perf_counter()
        try:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self._blocked += time.perf_counter() - began

    def _copy(self) -> None:
        cpu, began = time.thread_time(), time.perf_counter()
        try:
            lib = libpq_copy.bindings() if LIBPQ_DIRECT else None
            if lib is not None and lib.server_version(self._conn.pgconn_ptr) == self._conn.server_version:
                self._copy_from_libpq(lib)
            else:
                self._copy_through_psycopg2()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            self.cpu_seconds = time.thread_time() - cpu
            self.seconds = max(time.perf_counter() - began - self._blocked, 0.0)
            with _logged_lock:
                _totals["copy_threads"] += self.cpu_seconds
                _totals["decoding"] += self._decoder.cpu_seconds

    def _put_all(self, batches: list[pa.RecordBatch]) -> None:
        for batch in batches:
            if not self._put(batch):
                raise _Stopped

    def _copy_from_libpq(self, lib: libpq_copy.Libpq) -> None:
        """libpq's rows straight into the decoder's buffer, a megabyte per compiled call (no Python per row)."""
        ptr = self._conn.pgconn_ptr
        failed = libpq_copy.start_copy(lib, ptr, self._statement.as_string(self._conn).encode())
        if failed is not None:
            raise self._read_error(*failed)
        slot = np.zeros(2, dtype=np.uint64)  # a row libpq handed over that did not fit yet
        decoder = self._decoder
        try:
            while True:
                need = max(CHUNK_BYTES, int(slot[1]))
                buf, fill = decoder.reserve(need)
                fill, status = lib.fetch(
                    lib.get_copy_data, lib.freemem, lib.memcpy, ptr, buf, fill, fill + CHUNK_BYTES, slot
                )
                self._put_all(decoder.appended(int(fill)))
                if status == libpq_copy.DONE:
                    break
                if status == libpq_copy.FAILED:
                    raise self._read_error(*libpq_copy.connection_lost(lib, ptr))
        finally:
            if slot[1]:
                lib.freemem(slot[0])
        failed = libpq_copy.finish_copy(lib, ptr)
        if failed is not None:
            raise self._read_error(*failed)
        self._put_all(decoder.finish())
        self._put(_END)

    def _copy_through_psycopg2(self) -> None:
        """psycopg2's ``copy_expert`` into a 1 MB buffered writer whose raw end decodes (a Python call per row)."""
        sink = _DecodingSink(self._decoder, self._put)
        try:
            writer = io.BufferedWriter(sink, buffer_size=CHUNK_BYTES)
            self._conn.cursor().copy_expert(self._statement, writer)
            writer.flush()
        except BaseException:
            sink.stopped = True
            raise
        self._put_all(self._decoder.finish())
        self._put(_END)

    def _read_error(self, message: str, sqlstate: str | None) -> SourceReadError:
        return SourceReadError(_scrubbed(f"[libpq] {message}", self._url), sqlstate)

    def __iter__(self) -> CopyBatches:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._closed:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, pa.RecordBatch):
            return item
        self.close()
        if isinstance(item, _Failed):
            raise self._error(item.error) from item.error
        raise StopIteration

    def _error(self, error: BaseException) -> BaseException:
        import psycopg2

        if not isinstance(error, psycopg2.Error):
            return error  # the decoder's own CopyDecodeError, or a bug: as it is
        message = (error.pgerror or str(error)).strip()
        return SourceReadError(_scrubbed(f"[psycopg2] {type(error).__name__}: {message}", self._url), error.pgcode)

    def close(self) -> None:
        """Stop the COPY (a cancel request to the server), join the thread, close the connection."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._conn.cancel()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()  # a put waiting on a full queue sees the stop
            self._thread.join(_POLL_SECONDS)
        with contextlib.suppress(Exception):
            self._conn.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _describe(conn: Any, query: str) -> tuple[list[str], list[int]]:
    from psycopg2 import sql

    with conn.cursor() as cur:  # planned, not run: LIMIT 0 fetches nothing
        cur.execute(sql.SQL("SELECT * FROM (\n{}\n) AS batchscore_copy LIMIT 0").format(sql.SQL(query)))
        return [c.name for c in cur.description], [c.type_code for c in cur.description]


def _planned(url: str, query: str) -> tuple[Any, ColumnPlan] | None:
    """A psycopg2 connection and the decoder's plan for ``query``'s columns, or None (the reason logged once)."""
    import psycopg2

    try:
        conn = db.psycopg2_connect(url)
    except psycopg2.Error as exc:
        _log_once(f"could not connect with psycopg2 ({_scrubbed(str(exc).strip(), url)})")
        return None
    try:
        names, oids = _describe(conn, query)
    except psycopg2.Error as exc:
        _log_once(f"could not describe the query's columns ({type(exc).__name__})")
        conn.close()
        return None
    except BaseException:
        conn.close()
        raise
    plan = plan_columns(names, oids) if names else "the query has no columns"
    if isinstance(plan, str):
        _log_once(plan)
        conn.close()
        return None
    return conn, plan


def describe_schema(url: str, query: str) -> pa.Schema | None:
    """The schema the decoder would give ``query``'s rows, without running it (None: ADBC's to describe).

    No COPY and no numba: a plan task learns the source's columns from one ``LIMIT 0`` query.
    """
    planned = _planned(url, query)
    if planned is None:
        return None
    planned[0].close()
    return planned[1].schema


def copy_batches(url: str, query: str, batch_rows: int) -> tuple[pa.Schema, CopyBatches] | None:
    """The rows of ``query`` decoded here, or None when ADBC should read them (the reason logged once)."""
    from psycopg2 import sql

    planned = _planned(url, query)
    if planned is None:
        return None
    conn, plan = planned
    try:
        statement = sql.SQL("COPY (\n{}\n) TO STDOUT (FORMAT BINARY)").format(sql.SQL(query))
        return plan.schema, CopyBatches(conn, url, statement, plan, batch_rows)
    except BaseException:
        conn.close()
        raise


def warm_up() -> None:
    """Import numba, bind libpq and load both compiled kernels (the decoder, the row loop) before the first slice."""
    from batchscore.source.copy_decoder import load_decoder

    load_decoder()
    libpq_copy.load_fetch()
