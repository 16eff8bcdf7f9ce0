"""The binary COPY stream fed in chunks, decoded into Arrow record batches of a fixed number of rows.

:mod:`batchscore.source.copy_binary` holds the format, the column plan and the compiled row
loop; this module owns the buffers around it: the incomplete tail of the last chunk, the
arrays of the batch being filled (from Arrow's memory pool), and the batches' assembly.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore.source.copy_binary import (
    BAD_FIELD_COUNT,
    DATE,
    FLOAT4,
    FLOAT8,
    FULL,
    HEADER_BYTES,
    INT2,
    INT4,
    INT8,
    NEED_MORE,
    SIGNATURE,
    TEXT,
    TEXT_FULL,
    TIMESTAMP,
    TRAILER,
    ColumnPlan,
    CopyDecodeError,
    compiled_decoder,
    plan_columns,
)


def _pooled(shape: tuple[int, int], dtype: type) -> np.ndarray:
    """An array in Arrow's memory pool: freed batches' memory is reused without fresh page faults.

    Fresh pages cost about 12 microseconds each on this machine's VMs (0.5 s per 176 MB), more
    than decoding them; numpy's large allocations go back to the system and fault again.
    """
    size = shape[0] * shape[1] * np.dtype(dtype).itemsize
    return np.frombuffer(pa.allocate_buffer(size), dtype=dtype).reshape(shape)


class _BatchArrays:
    """The arrays one batch is decoded into (fresh per batch: the Arrow arrays view them, zero-copy)."""

    def __init__(self, plan: ColumnPlan, rows: int, text_room: int, valid: np.ndarray) -> None:
        self.fixed = _pooled((max(plan.fixed, 1), rows), np.int64)
        self.valid = valid  # reused: only its packed bits reach the batch
        self.offsets = np.zeros((max(plan.texts, 1), rows + 1), dtype=np.uint64)
        self.text = _pooled((max(plan.texts, 1), text_room if plan.texts else 0), np.uint8)
        self.rows = 0

    def grow_text(self) -> None:
        grown = _pooled((self.text.shape[0], max(2 * self.text.shape[1], 1 << 16)), np.uint8)
        grown[:, : self.text.shape[1]] = self.text
        self.text = grown

    def record_batch(self, plan: ColumnPlan) -> pa.RecordBatch:
        n = self.rows
        nulls_per_column = n - np.count_nonzero(self.valid[:, :n], axis=1)
        arrays = []
        for j, field in enumerate(plan.schema):
            kind, slot, nulls = int(plan.kinds[j]), int(plan.slots[j]), int(nulls_per_column[j])
            validity = pa.py_buffer(np.packbits(self.valid[j, :n], bitorder="little")) if nulls else None
            if kind == TEXT:
                ends = self.offsets[slot, : n + 1]
                if ends[-1] > np.iinfo(np.int32).max:
                    raise CopyDecodeError(f"column {field.name!r}: over 2 GiB of text in one batch of {n} rows")
                buffers = [validity, pa.py_buffer(ends.astype(np.int32)), pa.py_buffer(self.text[slot, : ends[-1]])]
            else:
                buffers = [validity, pa.py_buffer(_values(kind, self.fixed[slot, :n]))]
            arrays.append(pa.Array.from_buffers(field.type, n, buffers, null_count=nulls))
        return pa.RecordBatch.from_arrays(arrays, schema=plan.schema)


def _values(kind: int, column: np.ndarray) -> np.ndarray:
    """A fixed-width column's int64 slots as the Arrow type's values buffer."""
    if kind in (INT8, TIMESTAMP):
        return column
    if kind == FLOAT8:
        return column.view(np.float64)
    if kind in (INT4, DATE):
        return column.astype(np.int32)
    if kind == FLOAT4:
        return column.astype(np.uint32).view(np.float32)
    if kind == INT2:
        return column.astype(np.int16)
    return np.packbits(column.astype(np.bool_), bitorder="little")  # BOOL


class CopyDecoder:
    """Feed it the bytes of one ``COPY ... TO STDOUT (FORMAT BINARY)``; it returns batches of ``batch_rows`` rows.

    Memory: the incomplete tail of the last chunk (at least one row's worth) and the batch
    being filled. :meth:`finish` returns the last, shorter batch and checks the stream ended
    with its trailer.
    """

    def __init__(self, plan: ColumnPlan, batch_rows: int, chunk_bytes: int = 1 << 20) -> None:
        self.plan = plan
        self.batch_rows = max(1, batch_rows)
        self._decode = compiled_decoder()
        self._buf = np.empty(2 * chunk_bytes, dtype=np.uint8)
        self._pos = self._fill = 0
        self._started = self._ended = False
        self._text_room = 16 * self.batch_rows
        self._batch: _BatchArrays | None = None
        self._valid = np.empty((max(len(plan.kinds), 1), self.batch_rows), dtype=np.uint8)
        self.rows = 0  # rows in the batches returned so far
        self.cpu_seconds = 0.0  # the calling thread's CPU inside feed() and finish(): the decoding alone

    def reserve(self, nbytes: int) -> tuple[np.ndarray, int]:
        """Room for ``nbytes`` more at the end of the buffer: (buffer, where to write). See :meth:`appended`."""
        if len(self._buf) - self._fill < nbytes:  # move the incomplete tail to the front, growing if need be
            tail = self._fill - self._pos
            size = max(len(self._buf), 2 * (tail + nbytes))
            buf = self._buf if size == len(self._buf) else np.empty(size, dtype=np.uint8)
            buf[:tail] = self._buf[self._pos : self._fill]
            self._buf, self._pos, self._fill = buf, 0, tail
        return self._buf, self._fill

    def appended(self, fill: int) -> list[pa.RecordBatch]:
        """The caller wrote the stream's next bytes into the buffer up to ``fill``: decode them."""
        cpu = time.thread_time()
        try:
            self._fill = fill
            return self._decode_available()
        finally:
            self.cpu_seconds += time.thread_time() - cpu

    def _header(self) -> bool:
        if self._fill - self._pos < HEADER_BYTES:
            return False
        head = self._buf[self._pos : self._pos + HEADER_BYTES].tobytes()
        if head[: len(SIGNATURE)] != SIGNATURE:
            raise CopyDecodeError("the COPY stream does not start with PostgreSQL's binary COPY signature")
        extension = int.from_bytes(head[-4:], "big")
        if self._fill - self._pos < HEADER_BYTES + extension:
            return False
        self._pos += HEADER_BYTES + extension
        self._started = True
        return True

    def feed(self, data: Any) -> list[pa.RecordBatch]:
        """Decode what ``data`` completes; the full batches, in order."""
        cpu = time.thread_time()
        try:
            return self._feed(data)
        finally:
            self.cpu_seconds += time.thread_time() - cpu

    def _feed(self, data: Any) -> list[pa.RecordBatch]:
        chunk = np.frombuffer(data, dtype=np.uint8)
        buf, fill = self.reserve(len(chunk))
        buf[fill : fill + len(chunk)] = chunk
        self._fill = fill + len(chunk)
        return self._decode_available()

    def _decode_available(self) -> list[pa.RecordBatch]:
        if self._ended:
            if self._fill != self._pos:
                raise CopyDecodeError("the COPY stream has data after its trailer")
            return []
        if not self._started and not self._header():
            return []
        out = []
        while True:
            if self._batch is None:
                self._batch = _BatchArrays(self.plan, self.batch_rows, self._text_room, self._valid)
            b = self._batch
            pos, rows, status = self._decode(
                self._buf, self._pos, self._fill, self.plan.kinds, self.plan.slots,
                b.fixed, b.valid, b.rows, b.offsets, b.text,
            )  # fmt: skip
            self._pos, b.rows = int(pos), int(rows)
            if status == FULL:
                out.append(self._take())
            elif status == TEXT_FULL:
                b.grow_text()
            elif status == TRAILER:
                self._ended = True
                if self._pos != self._fill:
                    raise CopyDecodeError("the COPY stream has data after its trailer")
                return out
            elif status == NEED_MORE:
                return out
            else:
                what = "field count" if status == BAD_FIELD_COUNT else "field length"
                raise CopyDecodeError(f"row {self.rows + b.rows + 1} of the COPY stream has an unexpected {what}")

    def _take(self) -> pa.RecordBatch:
        assert self._batch is not None
        batch = self._batch.record_batch(self.plan)
        if self.plan.texts:
            self._text_room = max(self._text_room, int(self._batch.offsets[:, batch.num_rows].max()))
        self.rows += batch.num_rows
        self._batch = None
        return batch

    def finish(self) -> list[pa.RecordBatch]:
        """The last batch (if any rows are left); raises if the stream stopped before its trailer."""
        if not self._ended:
            raise CopyDecodeError(f"the COPY stream stopped after {self.rows} rows without its trailer")
        cpu = time.thread_time()
        last = [self._take()] if self._batch is not None and self._batch.rows else []
        self.cpu_seconds += time.thread_time() - cpu
        return last


def load_decoder() -> None:
    """Import numba and compile (or load from the cache) the decoder now: a warm process's preload."""
    decoder = compiled_decoder()
    empty = np.zeros(0, dtype=np.uint8)
    plan = plan_columns(["x", "t"], [20, 25])
    assert isinstance(plan, ColumnPlan)
    batch = _BatchArrays(plan, 1, 1, np.empty((2, 1), dtype=np.uint8))
    decoder(empty, 0, 0, plan.kinds, plan.slots, batch.fixed, batch.valid, 0, batch.offsets, batch.text)
