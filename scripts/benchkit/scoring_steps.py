"""CPU per million rows of each step a scoring thread takes for one batch, in memory, on one thread.

Run as ``python scripts/benchkit/scoring_steps.py [--rows N] [--batch-rows N] [--rounds N]
[--registry DIR] [--model NAME] [--engine CHECKOUT]`` (``--engine /work/main``: measure another
checkout's engine with the same script, for a before/after pair in the same minutes).

It generates the bench window's rows (the same generator and seeds as ``bench.features``),
cuts them into batches of the engine's size, and takes each batch through what a slice's
scoring thread does (``run/stages.py``'s ``work``) and what its loader thread adds (the score
summary, the batches for COPY), step by step, timing each with ``time.thread_time`` (CPU time
of this thread: the figure that holds on a shared machine). Each round also times the whole
of ``score_batch`` + drift counting as the engine calls it; the table gives the best round per
step (the machine's noise only ever adds time). The model's self-check runs before the clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one scoring thread, one OpenMP thread: the engine's shape on 2 cores


def _batches(rows: int, batch_rows: int) -> list[Any]:
    import pyarrow as pa

    from benchkit.data import CHUNK_ROWS, FEATURES, feature_chunk

    tables = [
        feature_chunk(i, first + 1, min(CHUNK_ROWS, rows - first)) for i, first in enumerate(range(0, rows, CHUNK_ROWS))
    ]
    table = pa.concat_tables(tables).select(["id", *FEATURES])
    # ADBC hands over fresh buffers per batch; combine so each batch owns contiguous buffers as it does there.
    return list(table.combine_chunks().to_batches(max_chunksize=batch_rows))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--registry", default=str(ROOT / ".local" / "bench" / "registry"))
    parser.add_argument("--model", default="bench")
    parser.add_argument("--engine", help="a checkout whose include/ to measure instead (before/after comparisons)")
    args = parser.parse_args(argv)
    if args.engine:
        sys.path.insert(0, str(Path(args.engine) / "include"))

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import numpy as np
    import pyarrow as pa

    from batchscore.models.registry import ModelRegistry
    from batchscore.scoring.drift import DriftCounter, Reference
    from batchscore.scoring.features import ArrowRows, conform, staged_schema, to_model_frame
    from batchscore.scoring.predict import _scores_table, score_batch, scorer, scores_schema
    from batchscore.scoring.summary import ScoreSummary
    from batchscore.scoring.validation import validate

    registry = ModelRegistry(args.registry)
    manifest = registry.resolve(args.model, "champion")
    model = scorer(registry.load(manifest), manifest)
    batches = _batches(args.rows, args.batch_rows)
    key = "id"
    schema = staged_schema(batches[0].schema, key, manifest.features)
    out_schema = scores_schema(key, schema.field(key).type)
    reference = Reference.from_dict(manifest.reference) if manifest.reference else None
    compiled = hasattr(model, "raw_predict")
    score_batch(conform(batches[0], schema), model, manifest, key, "reject", out_schema)  # the self-check, untimed
    n_trees = model.tables.n_trees if compiled else 0
    print(
        f"{args.model}: {type(model).__name__}, {n_trees} trees, {args.rows:,} rows in batches of "
        f"{args.batch_rows:,}, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    best: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for _ in range(args.rounds):
        spent: dict[str, float] = {}
        clock = [time.thread_time()]

        def lap(name: str, spent: dict[str, float] = spent, clock: list[float] = clock) -> None:
            now = time.thread_time()
            spent[name] = spent.get(name, 0.0) + now - clock[0]
            clock[0] = time.thread_time()

        drift = DriftCounter(reference) if reference else None
        summary = ScoreSummary()
        classes = [str(c) for c in model.classes_]
        column = classes.index(manifest.positive_class) if manifest.positive_class else 1
        for batch in batches:
            clock[0] = time.thread_time()
            table = conform(batch, schema)
            lap("conform (staged schema)")
            clean = validate(table, key, manifest.features).clean
            lap("validate (NULL / NaN / inf checks)")
            frame: Any = ArrowRows(clean, manifest.features)
            if not (compiled and getattr(model, "reads_arrow", False)):
                frame = to_model_frame(clean, manifest.features)
                lap("frame (Arrow -> matrix)")
            if compiled:
                x = model._matrix(frame)
                lap("matrix for the trees")
                raw = model.raw_predict(x, 1)
                lap("kernel (the trees)")
                proba = model._from_raw(raw, "predict_proba")
                lap("link (predict_proba from raw)")
            else:
                proba = model.predict_proba(frame)
                lap("predict_proba (scikit-learn)")
            top = proba.argmax(axis=1)
            score = np.ascontiguousarray(proba[:, column], dtype=np.float64)
            label = pa.array(classes, pa.string()).take(top)
            lap("score column + labels")
            scores = _scores_table(clean.column(key).combine_chunks(), score, label, out_schema)
            lap("scores table")
            if drift is not None:
                drift.add(clean, scores)
                lap("drift counts")
            summary.add(scores)
            lap("score summary (loader thread)")
            scores.to_batches()
            lap("to_batches (loader thread)")
        for name, seconds in spent.items():
            record(name, seconds)

        drift = DriftCounter(reference) if reference else None
        began = time.thread_time()
        for batch in batches:
            scored = score_batch(conform(batch, schema), model, manifest, key, "reject", out_schema)
            if drift is not None and scored.clean is not None:
                drift.add(scored.clean, scored.scores)
        record("the scoring thread's work, as the engine calls it", time.thread_time() - began)

    per_m = 1e6 / args.rows
    width = max(map(len, best))
    print(f"{'step':<{width}}  CPU-s per M rows")
    total = 0.0
    for name, seconds in best.items():
        if name.startswith("the scoring thread"):
            continue
        total += seconds
        tree_row = f"  ({seconds / args.rows / n_trees * 1e9:.2f} ns per tree-row)" if name.startswith("kernel") else ""
        print(f"{name:<{width}}  {seconds * per_m:6.3f}{tree_row}")
    print(f"{'sum of the steps':<{width}}  {total * per_m:6.3f}")
    whole = best["the scoring thread's work, as the engine calls it"]
    print(f"{'the scoring thread, as the engine calls it':<{width}}  {whole * per_m:6.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
