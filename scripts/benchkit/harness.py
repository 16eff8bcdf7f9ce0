"""The parent's side: run each path in a fresh process, measure it, combine rounds and floor parts."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.data import ROOT, BenchError, drop_table, settle
from benchkit.measure_process import wait_with_peak_rss
from benchkit.paths import WorkerArgs

BENCH_SCRIPT = ROOT / "scripts" / "bench.py"


@dataclass(frozen=True)
class Measurement:
    """One path's figures: worker-measured seconds, parent wall incl. start-up, peak tree RSS."""

    path: str
    seconds: float
    wall_seconds: float
    peak_rss_mb: float
    rows_written: int
    rounds: tuple[float, ...] = ()  # each round's seconds when the path ran more than once
    cores_busy: float = math.nan  # machine-wide average busy cores while it ran (PostgreSQL included)
    thread_cpu: dict[str, float] = field(default_factory=dict)  # the engine's CPU seconds by thread role
    extra: dict[str, float] = field(default_factory=dict)  # the path's own figures (CPU per stage, per part)


def worker_command(path: str, args: WorkerArgs, result_file: Path) -> list[str]:
    cmd = [sys.executable, str(BENCH_SCRIPT), "--path", path, "--url", args.url]
    cmd += ["--rows", str(args.rows), "--table", args.table, "--run-id", args.run_id, "--result-file", str(result_file)]
    if args.part_rows is not None:
        cmd += ["--slice-rows", str(args.part_rows)]
    if args.batch_rows is not None:
        cmd += ["--batch-rows", str(args.batch_rows)]
    return cmd


def measure(path: str, args: WorkerArgs) -> Measurement:
    """Run one path in a fresh interpreter, watching its memory; fail loudly if it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        started = time.perf_counter()
        proc = subprocess.Popen(worker_command(path, args, result_file), cwd=ROOT)
        peak = wait_with_peak_rss(proc)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not result_file.exists():
            raise BenchError(f"path {path} failed (exit code {proc.returncode}); its output is above")
        result = json.loads(result_file.read_text())
    return Measurement(
        path,
        float(result["seconds"]),
        wall,
        peak / 2**20,
        int(result["rows"]),
        cores_busy=float(result["cores_busy"]),
        thread_cpu=result.get("thread_cpu", {}),
        extra=result.get("extra", {}),
    )


def run_path(path: str, args: WorkerArgs, label: str = "") -> Measurement:
    """Drop the path's output table, settle the server, then measure the path."""
    if args.table:
        drop_table(args.url, args.table)
    settle(args.url)
    print(f"run: {path} {label}...", flush=True)
    measured = measure(path, args)
    print(f"run: {path} {label}{measured.seconds:.2f}s, peak RSS {measured.peak_rss_mb:.0f} MB", flush=True)
    return measured


def combine_floor(parts: Sequence[Measurement]) -> Measurement:
    """The floor: seconds and wall summed over its parts, peak RSS the largest part's."""
    return Measurement(
        "floor",
        sum(p.seconds for p in parts),
        sum(p.wall_seconds for p in parts),
        max(p.peak_rss_mb for p in parts),
        sum(p.rows_written for p in parts),
        cores_busy=sum(p.cores_busy * p.seconds for p in parts) / sum(p.seconds for p in parts),
    )


def median_of(runs: Sequence[Measurement]) -> Measurement:
    """One path over several rounds: the median seconds and wall, the largest peak RSS, every round kept."""
    return Measurement(
        runs[0].path,
        statistics.median(m.seconds for m in runs),
        statistics.median(m.wall_seconds for m in runs),
        max(m.peak_rss_mb for m in runs),
        runs[-1].rows_written,
        tuple(round(m.seconds, 3) for m in runs),
        statistics.median(m.cores_busy for m in runs),
        min(runs, key=lambda m: abs(m.seconds - statistics.median(r.seconds for r in runs))).thread_cpu,
        {key: statistics.median(m.extra[key] for m in runs if key in m.extra) for key in runs[0].extra},
    )
