"""Racing registry writers: ``batchscore`` commands in processes of their own, released at one instant.

Forked (the libraries are imported once, in the test's process), each runs the real CLI
entry point after a barrier, so that they pick version numbers and write at the same moment.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from batchscore.cli.main import main


def classifiers(count: int) -> tuple[pd.DataFrame, list[LogisticRegression]]:
    """``count`` classifiers with different coefficients (so their files differ), on one frame."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (x["a"] + x["b"] > 0).astype(int).to_numpy()
    return x, [LogisticRegression(C=0.01 * 3**i).fit(x, y) for i in range(count)]


def _cli(argv: list[str], barrier: Any, out: str) -> None:
    """One writer: wait for the others, then run the CLI with its output in ``out``."""
    barrier.wait(timeout=120)
    with open(out, "w") as handle, contextlib.redirect_stdout(handle):
        code = main(argv)
    sys.exit(code)


def race(commands: list[list[str]], folder: Path) -> list[str]:
    """Run each ``batchscore`` command in its own process, all released at once; their outputs, in order."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(commands))
    outs = [str(folder / f"writer-{i}.out") for i in range(len(commands))]
    procs = [ctx.Process(target=_cli, args=(argv, barrier, out)) for argv, out in zip(commands, outs, strict=True)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * len(procs), [Path(o).read_text() for o in outs]
    return [Path(out).read_text() for out in outs]
