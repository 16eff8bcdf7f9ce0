"""A run's CPU figures: the stored rate is the stored rows over the stored (rounded) total."""

from __future__ import annotations

from batchscore.sink.run_cost import RunCpu


def test_rows_per_cpu_second_is_of_the_rounded_total() -> None:
    slices = [
        {"startup": 0.12345, "model": 0.1, "read": 0.2, "score": 0.3, "load": 0.05, "total": 0.70049},
        {"startup": 0.1, "model": 0.1, "read": 0.2, "score": 0.3, "load": 0.05, "total": 0.7},
        None,  # a slice from an older worker carries no record
    ]
    cpu = RunCpu.of(slices, publish=0.0104, rows=1_000)
    assert cpu.total == round(0.12345 + 0.70049 + 0.1 + 0.7 + 0.0104, 3) == 1.634
    assert cpu.rows_per_cpu_second == round(1_000 / 1.634, 1)
    assert cpu.startup == 0.223
    assert cpu.publish == 0.01


def test_no_cpu_no_rate() -> None:
    assert RunCpu.of([], publish=0.0, rows=10).rows_per_cpu_second is None
