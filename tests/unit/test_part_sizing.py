"""The in-process runner's part size: at most two batches, about four parts per worker."""

from pathlib import Path

import pytest

from batchscore.config import load_config
from batchscore.job import MIN_IN_PROCESS_PART_ROWS, in_process_part_rows

CONFIG = load_config(Path(__file__).resolve().parents[2] / "include" / "pipelines" / "churn.yaml")
TWO_BATCHES = 2 * CONFIG.execution.batch_rows


@pytest.mark.parametrize(
    ("estimate", "workers", "expected"),
    [
        (None, 2, min(CONFIG.execution.part_rows, TWO_BATCHES)),  # no estimate (not PostgreSQL)
        (10_000_000, 2, TWO_BATCHES),  # big windows: two batches per part
        (200_000, 2, 25_000),  # small windows: four parts per worker
        (1_000, 2, MIN_IN_PROCESS_PART_ROWS),  # never tiny parts
        (0, 2, min(CONFIG.execution.part_rows, TWO_BATCHES)),  # an empty estimate says nothing
    ],
)
def test_part_rows(estimate: int | None, workers: int, expected: int) -> None:
    assert in_process_part_rows(CONFIG, estimate, workers) == expected
