"""PostgreSQL's binary COPY format decoded into Arrow record batches, the way ADBC returns them.

Decoding the COPY stream was the largest part of the extract's CPU with ADBC (1.5-1.7 CPU-s
per million rows of the bench table). Here one compiled pass (:func:`decode_rows`, compiled by
numba with the GIL released) walks the complete rows of a buffer and writes each column
straight into its batch arrays, so the cost is a few nanoseconds a field.

The contract: for the column types in :data:`SUPPORTED` the record batches are equal to ADBC's
(``pa.Table.equals``), schema and field metadata included: int2/int4/int8, float4/float8,
bool, timestamptz (``timestamp[us, tz=UTC]``), timestamp, date, and text / varchar / bpchar /
name (``string``). Timestamps and dates are shifted from PostgreSQL's epoch (2000-01-01) to
Unix's with the same wrapping integer arithmetic as ADBC, so even +-infinity gives ADBC's
(wrapped) values. Any other type is refused by :func:`plan_columns`, and the caller takes the
ADBC path. Rows may straddle the chunks fed in: the decoder keeps the incomplete tail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore.errors import PermanentError

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER_BYTES = len(SIGNATURE) + 8  # the signature, flags (int32), header extension length (int32)

# Column kinds of the compiled decoder, and the bytes each takes on the wire (-1: variable).
BOOL, INT2, INT4, INT8, FLOAT4, FLOAT8, DATE, TIMESTAMP, TEXT = range(9)
WIDTH = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIMESTAMP: 8, TEXT: -1}
_WIDTHS = np.array([max(WIDTH[kind], 0) for kind in range(len(WIDTH))], dtype=np.uint64)  # a constant to numba
UNIX_FROM_PG_DAYS = 10_957  # 1970-01-01 -> 2000-01-01
UNIX_FROM_PG_MICROS = UNIX_FROM_PG_DAYS * 86_400 * 1_000_000
# Unsigned constants for the compiled loop (mixing signed and unsigned would turn numba's arithmetic to floats).
_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = (np.uint64(k) for k in range(1, 9))
_U16, _U24, _U32, _U40, _U48, _U56 = (np.uint64(k) for k in (16, 24, 32, 40, 48, 56))
_TRAILER, _NULL, _MAX_FIELD = np.uint64(0xFFFF), np.uint64(0xFFFFFFFF), np.uint64(0x7FFFFFFF)
_PG_MICROS = np.uint64(UNIX_FROM_PG_MICROS)
_KTEXT, _KTIMESTAMP, _KFLOAT4, _KDATE = (np.uint64(k) for k in (TEXT, TIMESTAMP, FLOAT4, DATE))

# PostgreSQL type OID -> (type name as ADBC records it in field metadata, decoder kind, Arrow type).
SUPPORTED: dict[int, tuple[str, int, pa.DataType]] = {
    16: ("bool", BOOL, pa.bool_()),
    21: ("int2", INT2, pa.int16()),
    23: ("int4", INT4, pa.int32()),
    20: ("int8", INT8, pa.int64()),
    700: ("float4", FLOAT4, pa.float32()),
    701: ("float8", FLOAT8, pa.float64()),
    1082: ("date", DATE, pa.date32()),
    1114: ("timestamp", TIMESTAMP, pa.timestamp("us")),
    1184: ("timestamptz", TIMESTAMP, pa.timestamp("us", tz="UTC")),
    25: ("text", TEXT, pa.string()),
    1043: ("varchar", TEXT, pa.string()),
    1042: ("bpchar", TEXT, pa.string()),
    19: ("name", TEXT, pa.string()),
}

# Status codes of decode_rows.
NEED_MORE, FULL, TRAILER, TEXT_FULL, BAD_FIELD_COUNT, BAD_LENGTH = range(6)


class CopyDecodeError(PermanentError):
    """The binary COPY stream is not what its column types say (a driver or server surprise)."""

    remedy = "set BATCHSCORE_COPY_DECODER=0 to read this source through ADBC, and report the query's column types"


@dataclass(frozen=True)
class ColumnPlan:
    """What the decoder writes for a result's columns: kinds, and each column's slot among its kind."""

    schema: pa.Schema
    kinds: np.ndarray  # uint64 per column
    slots: np.ndarray  # uint64 per column: its row in the fixed-width or the text arrays

    @property
    def fixed(self) -> int:
        return int(np.count_nonzero(self.kinds != TEXT))

    @property
    def texts(self) -> int:
        return int(np.count_nonzero(self.kinds == TEXT))


def plan_columns(names: Sequence[str], type_oids: Sequence[int]) -> ColumnPlan | str:
    """The plan for a result's columns, or why it cannot be decoded here (the first unsupported type)."""
    fields, kinds, slots, counts = [], [], [], [0, 0]
    for name, oid in zip(names, type_oids, strict=True):
        if oid not in SUPPORTED:
            return f"column {name!r} has type OID {oid}, which the COPY decoder does not read"
        typname, kind, arrow_type = SUPPORTED[oid]
        fields.append(pa.field(name, arrow_type, nullable=True, metadata={"POSTGRESQL:type": typname}))
        kinds.append(kind)
        slots.append(counts[kind == TEXT])
        counts[kind == TEXT] += 1
    return ColumnPlan(pa.schema(fields), np.array(kinds, dtype=np.uint64), np.array(slots, dtype=np.uint64))


def decode_rows(  # noqa: PLR0911, PLR0917
    buf: np.ndarray,
    pos: Any,
    end: Any,
    kinds: np.ndarray,
    slots: np.ndarray,
    fixed: np.ndarray,
    valid: np.ndarray,
    row: Any,
    offsets: np.ndarray,
    text: np.ndarray,
) -> tuple[Any, Any, int]:
    """Decode the complete rows of ``buf[pos:end]`` into row ``row`` onwards: (new pos, new row, status).

    ``fixed[slot, row]`` gets each fixed-width value as an int64 (floats as their bits, epochs
    shifted), ``valid[col, row]`` 1 or 0, and text columns append their bytes to ``text[slot]``
    with ``offsets[slot, row + 1]`` the end. Stops before the first incomplete row (NEED_MORE),
    at a full batch (FULL), after the trailer (TRAILER), before a row whose text does not fit
    (TEXT_FULL: grow ``text`` and call again), or at a malformed row (BAD_*). A row is written
    in one pass and counted only once complete, so a stop mid-row leaves nothing behind that
    the next call does not overwrite. Plain Python here; numba compiles it (:func:`compiled_decoder`).

    Every index is unsigned (``kinds``, ``slots`` and ``offsets`` are uint64 arrays): numba then
    drops its negative-index checks and LLVM merges the byte loads of a big-endian value into
    one load and a byte swap, which made the loop 4-5x faster (0.26 -> 0.05 CPU-s per million
    rows of the bench table).
    """
    ncols = np.uint64(kinds.shape[0])
    max_rows = np.uint64(valid.shape[1])
    room = np.uint64(text.shape[1])
    pos, end, row = np.uint64(pos), np.uint64(end), np.uint64(row)
    while row < max_rows:
        if end - pos < _U2:
            return pos, row, NEED_MORE
        count = (np.uint64(buf[pos]) << _U8) | np.uint64(buf[pos + _U1])
        if count == _TRAILER:
            return pos + _U2, row, TRAILER
        if count != ncols:
            return pos, row, BAD_FIELD_COUNT
        p = pos + _U2
        for jj in range(kinds.shape[0]):
            j = np.uint64(jj)
            if end - p < _U4:
                return pos, row, NEED_MORE
            n = (
                (np.uint64(buf[p]) << _U24)
                | (np.uint64(buf[p + _U1]) << _U16)
                | (np.uint64(buf[p + _U2]) << _U8)
                | np.uint64(buf[p + _U3])
            )
            p += _U4
            kind = kinds[j]
            slot = slots[j]
            if n == _NULL:
                valid[j, row] = 0
                if kind == _KTEXT:
                    offsets[slot, row + _U1] = offsets[slot, row]
                else:
                    fixed[slot, row] = 0
                continue
            if n > _MAX_FIELD or (kind != _KTEXT and n != _WIDTHS[kind]):
                return pos, row, BAD_LENGTH
            if end - p < n:
                return pos, row, NEED_MORE
            valid[j, row] = 1
            if kind == _KTEXT:
                start = offsets[slot, row]
                if start + n > room:
                    return pos, row, TEXT_FULL
                for i in range(np.int64(n)):
                    text[slot, start + np.uint64(i)] = buf[p + np.uint64(i)]
                offsets[slot, row + _U1] = start + n
                p += n
            elif n == _U8:  # INT8, FLOAT8 (its bits), TIMESTAMP
                v = (
                    (np.uint64(buf[p]) << _U56)
                    | (np.uint64(buf[p + _U1]) << _U48)
                    | (np.uint64(buf[p + _U2]) << _U40)
                    | (np.uint64(buf[p + _U3]) << _U32)
                    | (np.uint64(buf[p + _U4]) << _U24)
                    | (np.uint64(buf[p + _U5]) << _U16)
                    | (np.uint64(buf[p + _U6]) << _U8)
                    | np.uint64(buf[p + _U7])
                )
                if kind == _KTIMESTAMP:  # wraps as ADBC's int64 arithmetic does (+-infinity)
                    v += _PG_MICROS
                fixed[slot, row] = np.int64(v)
                p += _U8  # a constant step, not p += n: the next field's loads need not wait for this length
            elif n == _U4:  # INT4, FLOAT4 (its bits), DATE
                w = (
                    (np.uint32(buf[p]) << np.uint32(24))
                    | (np.uint32(buf[p + _U1]) << np.uint32(16))
                    | (np.uint32(buf[p + _U2]) << np.uint32(8))
                    | np.uint32(buf[p + _U3])
                )
                if kind == _KFLOAT4:
                    fixed[slot, row] = np.int64(w)
                elif kind == _KDATE:  # wraps in int32 as ADBC's does
                    fixed[slot, row] = np.int64(np.int32(w + np.uint32(UNIX_FROM_PG_DAYS)))
                else:
                    fixed[slot, row] = np.int64(np.int32(w))
                p += _U4
            elif n == _U2:  # INT2
                fixed[slot, row] = np.int64(np.int16((np.uint16(buf[p]) << np.uint16(8)) | np.uint16(buf[p + _U1])))
                p += _U2
            else:  # BOOL
                fixed[slot, row] = np.int64(buf[p])
                p += _U1
        pos = p
        row += _U1
    return pos, row, FULL


_decoder: list[Any] = []
_DECODER_LOCK = threading.Lock()


def compiled_decoder() -> Any:
    """:func:`decode_rows` compiled by numba (nogil, cached on disk): the first call in a process imports numba."""
    with _DECODER_LOCK:
        if not _decoder:
            from batchscore import numba_cache

            numba_cache.numba_cache_dir(__file__)
            import numba

            _decoder.append(numba.njit(nogil=True, cache=True)(decode_rows))
        return _decoder[0]


def load_decoder() -> None:
    """Import numba and compile (or load from the cache) the decoder now: a warm process's preload."""
    decoder = compiled_decoder()
    empty = np.zeros(0, dtype=np.uint8)
    plan = plan_columns(["x", "t"], [20, 25])
    assert isinstance(plan, ColumnPlan)
    batch = _BatchArrays(plan, 1, 1, np.empty((2, 1), dtype=np.uint8))
    decoder(empty, 0, 0, plan.kinds, plan.slots, batch.fixed, batch.valid, 0, batch.offsets, batch.text)


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
