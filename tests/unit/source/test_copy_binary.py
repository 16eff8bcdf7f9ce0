"""The binary COPY decoder over hand-built streams: values, NULLs, rows straddling every chunk edge, bad streams."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pytest

from batchscore.source.copy_binary import SIGNATURE, ColumnPlan, CopyDecodeError, plan_columns
from batchscore.source.copy_decoder import CopyDecoder

NAMES = ["i2", "i4", "i8", "f4", "f8", "b", "ts", "tstz", "d", "t"]
OIDS = [21, 23, 20, 700, 701, 16, 1114, 1184, 1082, 25]
PG_EPOCH_US = 946_684_800_000_000
PG_EPOCH_DAYS = 10_957


def encode(value: object, oid: int) -> bytes:
    """One field as PostgreSQL's binary send functions write it."""
    if value is None:
        return struct.pack(">i", -1)
    body: bytes
    if oid == 21:
        body = struct.pack(">h", value)
    elif oid == 23:
        body = struct.pack(">i", value)
    elif oid == 20:
        body = struct.pack(">q", value)
    elif oid == 700:
        body = struct.pack(">f", value)
    elif oid == 701:
        body = struct.pack(">d", value)
    elif oid == 16:
        body = b"\x01" if value else b"\x00"
    elif oid in (1114, 1184):
        body = struct.pack(">q", value)  # microseconds since 2000-01-01
    elif oid == 1082:
        body = struct.pack(">i", value)  # days since 2000-01-01
    else:
        body = str(value).encode()
    return struct.pack(">i", len(body)) + body


def stream(rows: list[list[object]], oids: list[int]) -> bytes:
    out = [SIGNATURE, struct.pack(">ii", 0, 0)]
    for row in rows:
        out.append(struct.pack(">h", len(row)))
        out += [encode(v, oid) for v, oid in zip(row, oids, strict=True)]
    out.append(struct.pack(">h", -1))
    return b"".join(out)


def same_table(got: pa.Table, want: pa.Table) -> bool:
    """``Table.equals`` (schema and field metadata included), with floats compared by their bits.

    Arrow's ``equals`` holds NaN unequal to itself; the bits also tell -0.0 from 0.0.
    """
    if not got.schema.equals(want.schema, check_metadata=True) or got.num_rows != want.num_rows:
        return False
    bits = {pa.float32(): pa.int32(), pa.float64(): pa.int64()}
    for name in got.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        if a.type in bits:
            a, b = a.view(bits[a.type]), b.view(bits[b.type])
        if not a.equals(b):
            return False
    return True


def the_plan(names: list[str] = NAMES, oids: list[int] = OIDS) -> ColumnPlan:
    plan = plan_columns(names, oids)
    assert isinstance(plan, ColumnPlan)
    return plan


def decode(data: bytes, plan: ColumnPlan, batch_rows: int, chunk: int) -> tuple[pa.Table, list[int]]:
    decoder = CopyDecoder(plan, batch_rows, chunk_bytes=max(chunk, 1))
    batches = []
    for start in range(0, len(data), chunk):
        batches += decoder.feed(data[start : start + chunk])
    batches += decoder.finish()
    return pa.Table.from_batches(batches, plan.schema), [b.num_rows for b in batches]


def sample_rows(n: int) -> list[list[object]]:
    rng = np.random.default_rng(7)
    rows: list[list[object]] = []
    edge: list[list[object]] = [
        [-32768, -(2**31), -(2**63), float("inf"), float("-inf"), True, 0, 0, 0, ""],
        [32767, 2**31 - 1, 2**63 - 1, float("nan"), -0.0, False, -1, 1, -1, "é€😀"],
        [None] * 10,
    ]
    for i in range(n):
        if i < len(edge):
            rows.append(edge[i])
            continue
        rows.append([
            int(rng.integers(-100, 100)), i, i * 1_000_003, float(i) / 3, float(rng.normal()), i % 3 == 0,
            i * 1_000_000, -i * 1_000, i % 4000, "x" * int(rng.integers(0, 40)) if i % 5 else None,
        ])  # fmt: skip
    return rows


def expected(rows: list[list[object]], plan: ColumnPlan) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for j, field in enumerate(plan.schema):
        values = list(columns[j])
        if field.name in ("ts", "tstz"):
            shifted = [None if v is None else int(v) + PG_EPOCH_US for v in values]
            arrays.append(pa.array(shifted, pa.int64()).cast(field.type))
        elif field.name == "d":
            shifted = [None if v is None else int(v) + PG_EPOCH_DAYS for v in values]
            arrays.append(pa.array(shifted, pa.int32()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=plan.schema)


def test_the_schema_is_adbcs_names_types_and_metadata() -> None:
    schema = the_plan().schema
    assert schema.field("tstz").type == pa.timestamp("us", tz="UTC")
    assert schema.field("ts").type == pa.timestamp("us")
    assert schema.field("d").type == pa.date32()
    assert schema.field("t").type == pa.string()
    assert schema.field("f4").type == pa.float32()
    assert schema.field("i2").metadata == {b"POSTGRESQL:type": b"int2"}
    assert all(f.nullable for f in schema)


@pytest.mark.parametrize(("batch_rows", "chunk"), [(1, 1), (3, 7), (64, 33), (1000, 4096), (100_000, 1 << 20)])
def test_values_nulls_and_edges_survive_any_chunking(batch_rows: int, chunk: int) -> None:
    plan = the_plan()
    rows = sample_rows(300)
    table, sizes = decode(stream(rows, OIDS), plan, batch_rows, chunk)
    assert same_table(table, expected(rows, plan))
    assert sizes == [min(batch_rows, 300 - k) for k in range(0, 300, batch_rows)]
    assert table.column("f8")[1].as_py() == 0.0
    assert np.signbit(table.column("f8").to_numpy(zero_copy_only=False)[1])
    assert np.isnan(table.column("f4")[1].as_py())
    assert table.column("tstz")[0].as_py() == datetime(2000, 1, 1, tzinfo=UTC)
    assert table.column("d")[1].as_py() == date(1999, 12, 31)
    assert table.column("t")[1].as_py() == "é€😀"
    assert table.column("t").null_count == sum(1 for r in rows if r[9] is None)


def test_every_split_point_of_a_small_stream_gives_the_same_table() -> None:
    plan = the_plan()
    rows = sample_rows(12)
    data = stream(rows, OIDS)
    want = expected(rows, plan)
    for cut in range(1, len(data)):
        decoder = CopyDecoder(plan, 5)
        batches = decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.finish()
        assert same_table(pa.Table.from_batches(batches, plan.schema), want), cut


def test_a_text_longer_than_the_buffers_grows_them() -> None:
    plan = the_plan(["t"], [25])
    rows: list[list[object]] = [["a" * 3_000_000], ["b"], [None], ["c" * 70_000]]
    table, _ = decode(stream(rows, [25]), plan, 2, 1 << 16)
    assert table.column("t").to_pylist() == [r[0] for r in rows]


def test_an_empty_result_has_no_batches() -> None:
    table, sizes = decode(stream([], OIDS), the_plan(), 10, 100)
    assert sizes == []
    assert table.num_rows == 0


def test_other_types_are_refused_with_the_column_named() -> None:
    assert plan_columns(["id", "amount"], [20, 1700]) == (
        "column 'amount' has type OID 1700, which the COPY decoder does not read"
    )


def test_a_stream_without_its_trailer_raises() -> None:
    data = stream(sample_rows(4), OIDS)[:-2]
    decoder = CopyDecoder(the_plan(), 10)
    decoder.feed(data)
    with pytest.raises(CopyDecodeError, match="stopped after 0 rows without its trailer"):
        decoder.finish()


def test_a_wrong_field_count_or_length_raises_naming_the_row() -> None:
    good = stream(sample_rows(3), OIDS)
    bad_count = good[:-2] + struct.pack(">h", 2) + encode(1, 21) + encode(2, 23) + struct.pack(">h", -1)
    with pytest.raises(CopyDecodeError, match="row 4 of the COPY stream has an unexpected field count"):
        CopyDecoder(the_plan(), 10).feed(bad_count)
    plan = the_plan(["x"], [20])
    bad_length = SIGNATURE + struct.pack(">ii", 0, 0) + struct.pack(">h", 1) + encode(7, 23) + struct.pack(">h", -1)
    with pytest.raises(CopyDecodeError, match="row 1 of the COPY stream has an unexpected field length"):
        CopyDecoder(plan, 10).feed(bad_length)
    with pytest.raises(CopyDecodeError, match="signature"):
        CopyDecoder(plan, 10).feed(b"PGCOPY\n\xff\r\n\x01" + bytes(8))
