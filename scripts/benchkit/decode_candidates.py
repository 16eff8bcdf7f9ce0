"""The extract's candidates side by side: CPU-s per million rows to read the bench window into Arrow batches.

    .venv/bin/python scripts/benchkit/decode_candidates.py --rows 1000000 --rounds 3

Each candidate reads ``SELECT * FROM bench.features WHERE id <= rows`` (id, event_time, 20
float8: about 266 bytes a row of binary COPY) in one process, the candidates interleaved
round by round; the figure is this process's CPU (all threads; the server's excluded), best
of the rounds. The bench table must exist (``make bench`` creates it).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))

from benchkit import data

BATCH_ROWS = 100_000


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        return memoryview(b).nbytes  # type: ignore[arg-type]


def adbc(url: str, query: str) -> int:
    from batchscore.source.extract import _adbc_batches

    _, batches = _adbc_batches(url, query, BATCH_ROWS)
    return sum(b.num_rows for b in batches)


def copy_decoder(url: str, query: str, *, libpq: bool) -> int:
    from batchscore.source import copy_stream

    copy_stream.LIBPQ_DIRECT = libpq
    decoded = copy_stream.copy_batches(url, query, BATCH_ROWS)
    assert decoded is not None
    return sum(b.num_rows for b in decoded[1])


def psycopg2_transport_alone(url: str, query: str) -> int:
    from batchscore import db

    conn = db.psycopg2_connect(url)
    try:
        writer = io.BufferedWriter(_Discard(), buffer_size=1 << 20)
        conn.cursor().copy_expert(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", writer)
    finally:
        conn.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = data.start_server().url(data.DATABASE)
    query = f"SELECT * FROM bench.features WHERE id <= {int(args.rows)}"  # an integer
    from batchscore.source import copy_stream

    copy_stream.warm_up()
    candidates: dict[str, Callable[[], int]] = {
        "ADBC (adbc_driver_postgresql's COPY reader)": lambda: adbc(url, query),
        "psycopg2 copy_expert alone (transport, bytes discarded)": lambda: psycopg2_transport_alone(url, query),
        "psycopg2 copy_expert + the COPY decoder": lambda: copy_decoder(url, query, libpq=False),
        "libpq read by compiled code + the COPY decoder": lambda: copy_decoder(url, query, libpq=True),
    }
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(args.rounds):
        for name, run in candidates.items():
            before = copy_stream.cpu_totals()["decoding"]
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            decoding = copy_stream.cpu_totals()["decoding"] - before
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, wall, decoding)
    per_m = 1e6 / args.rows
    load = os.getloadavg()
    print(f"{args.rows:,} rows, best of {args.rounds}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, (cpu, wall, decoding) in best.items():
        share = f" (decoding {decoding * per_m:.3f})" if decoding else ""
        print(f"  {name:58s} {cpu * per_m:6.3f} CPU-s per million rows{share}, wall {wall * per_m:5.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
