"""The staging format between tasks: Arrow IPC files, one per part, on a folder or object store.

Staged parts are transient (written by one task, read by the next, deleted after the
publish) and only ever read by this engine, so they use Arrow's own IPC file format
rather than Parquet: writing is a copy of the record batches (measured here: 0.17 s per
million rows x 21 float columns, against 0.9 s for Parquet without dictionaries and 5.5 s
for Parquet with its defaults), and reading is zero-copy. Each write is a batch, so memory
holds one batch, never a part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from pyarrow import ipc

from batchscore import storage

SUFFIX = ".arrow"


class PartWriter:
    """Writes one staged part batch by batch; ``close`` makes it readable."""

    def __init__(self, url: str, schema: pa.Schema) -> None:
        fs, path = storage.filesystem(url)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.url = url
        self._handle: Any = fs.open(path, "wb")
        self._writer = ipc.new_file(self._handle, schema)
        self.rows = 0

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_rows:
            self._writer.write(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._handle.close()


class RollingPartWriter:
    """Cuts a stream of tables into parts of at most ``part_rows`` rows, named by index.

    ``name(i)`` gives part ``i``'s URL; ``on_part`` is told each finished part's URL.
    """

    def __init__(
        self,
        name: Callable[[int], str],
        schema: pa.Schema,
        part_rows: int,
        on_part: Callable[[str], None] | None = None,
    ) -> None:
        self.name, self.schema, self.part_rows, self.on_part = name, schema, part_rows, on_part
        self.parts: list[str] = []
        self.rows_per_part: list[int] = []
        self._current: PartWriter | None = None

    def _roll(self) -> PartWriter:
        self._finish_current()
        self._current = PartWriter(self.name(len(self.parts)), self.schema)
        self.parts.append(self._current.url)
        return self._current

    def _finish_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self.rows_per_part.append(self._current.rows)
            if self.on_part is not None:
                self.on_part(self._current.url)
            self._current = None

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            current = self._current
            if current is None or current.rows >= self.part_rows:
                current = self._roll()
            take = min(self.part_rows - current.rows, table.num_rows - offset)
            current.write(table.slice(offset, take))
            offset += take

    def finish(self) -> list[str]:
        """Close the last part; an empty stream still yields one empty part (downstream always has input)."""
        if not self.parts:
            self._roll()
        self._finish_current()
        return self.parts


def _open(url: str) -> tuple[Any, ipc.RecordBatchFileReader]:
    fs, path = storage.filesystem(url)
    if getattr(fs, "protocol", None) in ("file", ("file", "local")):
        # A plain file, not a memory map: batches are read on demand, so resident memory stays at a batch.
        local = pa.OSFile(path)
        return local, ipc.open_file(local)
    handle = fs.open(path, "rb")
    return handle, ipc.open_file(handle)


def read_schema(url: str) -> pa.Schema:
    handle, reader = _open(url)
    try:
        return reader.schema
    finally:
        if handle is not None:
            handle.close()


def num_rows(url: str) -> int:
    handle, reader = _open(url)
    try:
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    finally:
        if handle is not None:
            handle.close()


def iter_batches(url: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A part's rows in batches of at most ``batch_rows`` (zero-copy slices)."""
    handle, reader = _open(url)
    try:
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            for offset in range(0, batch.num_rows, batch_rows):
                yield batch.slice(offset, batch_rows)
    finally:
        if handle is not None:
            handle.close()


def read_table(url: str) -> pa.Table:
    """A whole part (tests and small parts only)."""
    return pa.Table.from_batches(list(iter_batches(url, 1 << 30)), schema=read_schema(url))


def reader(urls: list[str], schema: pa.Schema, batch_rows: int = 262_144) -> pa.RecordBatchReader:
    """Several parts as one stream (the load step feeds it to a bulk COPY)."""

    def batches() -> Iterator[pa.RecordBatch]:
        for url in urls:
            yield from iter_batches(url, batch_rows)

    return pa.RecordBatchReader.from_batches(schema, batches())
