"""Where the engine's time goes: one extra, untimed engine run sampled by py-spy.

``bench.py --profile`` calls :func:`profile` with the engine worker's command line. py-spy
samples every thread of the worker 100 times a second (idle threads, e.g. one waiting on a
queue or a socket, are not counted), and this module folds the samples into CPU seconds per
pipeline stage and per hottest function, with native frames so that time inside C
extensions (the ADBC driver, scikit-learn's tree walk, Arrow) is named too. The whole worker
process is sampled, imports included ("other"), so use it at 2M rows or more.

    .venv/bin/python scripts/bench.py --paths e --repeat 1 --profile
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

RATE_HZ = 100
# A sample's stage is the first of these frames found from the top of its stack.
STAGES = (
    ("extract", ("_pg_batches", "_adbc_batches", "_sqlalchemy_batches", "_slice_batches", "CopyBatches")),
    ("predict", ("score_batch",)),
    ("load", ("ingest_scores", "RejectWriter")),
    ("publish", ("publish_window",)),
    ("plan", ("plan_run",)),
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^)]*)\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter's scripts, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(command: list[str], out: Path) -> Path:
    """Run ``command`` under py-spy; returns the collapsed-stacks file (one ``stack count`` per line)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (it is in requirements-dev.txt: make install)")
    out.parent.mkdir(parents=True, exist_ok=True)
    options = ["--native", "--threads", "--rate", str(RATE_HZ), "--format", "raw"]
    subprocess.run([exe, "record", *options, "--output", str(out), "--", *command], check=True)
    return out


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw)
        frames.append((match.group("func"), Path(match.group("file")).name) if match else (raw, ""))
    return frames


def summarize(collapsed: Path, top: int = 12) -> str:
    """CPU seconds by stage and the ``top`` functions by their own (leaf) time, as printable lines."""
    stages: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        names = {func for func, _ in frames}
        stage = next((name for name, markers in STAGES if names.intersection(markers)), "other")
        stages[stage] += count
        func, file = frames[-1]
        leaves[f"{func} ({file})" if file else func] += count
        total += count
    if not total:
        return "profile: no samples"
    seconds = 1 / RATE_HZ
    lines = [f"profile: {total * seconds:.1f} CPU-seconds sampled in the engine's process (PostgreSQL not included)"]
    lines.append("  by stage: " + ", ".join(f"{s} {c * seconds:.1f}s" for s, c in stages.most_common()))
    lines.append("  hottest functions (own time):")
    lines += [f"    {c * seconds:6.2f}s {c / total:5.1%}  {name[:100]}" for name, c in leaves.most_common(top)]
    return "\n".join(lines)
