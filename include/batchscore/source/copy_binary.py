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
ADBC path. :mod:`batchscore.source.copy_decoder` feeds the loop chunk by chunk (rows may straddle
chunks: it keeps the incomplete tail) and assembles the batches.
"""

from __future__ import annotations

import threading
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
