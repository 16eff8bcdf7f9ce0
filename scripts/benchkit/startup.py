"""What a slice task pays before its first row, piece by piece, in a fresh interpreter.

Run as ``python scripts/benchkit/startup.py [registry] [model]``: it imports what an Airflow
slice task imports, in the task's order, then loads the bench model from the registry and
builds its compiled scorer, printing each piece's wall and CPU seconds. CPU seconds are the
figure on a shared machine; ``python -X importtime`` breaks a piece down further.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

PIECES = (
    ("airflow.sdk", "the Task SDK (the task runner imports it before the task)"),
    ("batchscore.run.stages", "the engine's stages (pyarrow, psycopg, pydantic config)"),
    ("adbc_driver_postgresql.dbapi", "the source's ADBC driver"),
)


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    registry = argv[0] if argv else str(root / ".local" / "bench" / "registry")
    name = argv[1] if len(argv) > 1 else "bench"
    total_wall, total_cpu = time.perf_counter(), time.process_time()
    for module, what in PIECES:
        wall, cpu = time.perf_counter(), time.process_time()
        importlib.import_module(module)
        print(f"{module:<32}{time.perf_counter() - wall:>7.2f}s wall {time.process_time() - cpu:>6.2f} CPU-s  {what}")
    from batchscore.models.registry import ModelRegistry

    models = ModelRegistry(registry)
    manifest = models.resolve(name, "champion")
    wall, cpu = time.perf_counter(), time.process_time()
    model = models.load(manifest)
    print(
        f"{'model load (skops, scikit-learn)':<32}{time.perf_counter() - wall:>7.2f}s wall "
        f"{time.process_time() - cpu:>6.2f} CPU-s  {type(model).__name__}"
    )
    from batchscore.scoring.predict import scorer

    wall, cpu = time.perf_counter(), time.process_time()
    fast = scorer(model, manifest)
    print(
        f"{'scorer (numba, cached kernel)':<32}{time.perf_counter() - wall:>7.2f}s wall "
        f"{time.process_time() - cpu:>6.2f} CPU-s  {type(fast).__name__}; numba loaded: {'numba' in sys.modules}"
    )
    print(f"{'all':<32}{time.perf_counter() - total_wall:>7.2f}s wall {time.process_time() - total_cpu:>6.2f} CPU-s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
