"""Chart series from run records: densities, trend, drift heat map and challenger, only from recorded data."""

import pytest

from batchscore.reports import run_charts
from tests.unit.reports.ui_records import SHADOW, drift_rows, histogram, run


def test_density_integrates_to_one_over_the_score_axis() -> None:
    points = run_charts.density(histogram(0.1))
    assert points is not None
    assert len(points) == 20
    width = 0.04
    assert sum(p["y"] * width for p in points) == pytest.approx(1.0)
    assert points[0]["x"] == pytest.approx(0.12)


@pytest.mark.parametrize(
    "bad", [None, {}, {"edges": [0, 1], "counts": [0]}, {"edges": [0, 1, 2], "counts": [1]}, {"counts": [1]}]
)
def test_density_of_a_missing_or_empty_histogram_is_none(bad: object) -> None:
    assert run_charts.density(bad) is None  # type: ignore[arg-type]


def test_distribution_is_this_run_against_earlier_windows_newest_first() -> None:
    runs = [run(day) for day in range(8)]
    chart = run_charts.distribution(runs[-1], runs[:-1])
    assert chart is not None
    assert chart["run"]["run_id"] == runs[-1]["run_id"]
    assert chart["counts"] == runs[-1]["score_summary"]["histogram"]["counts"]
    assert [p["run_id"] for p in chart["previous"]] == [r["run_id"] for r in reversed(runs[2:7])]
    without = run(9, score_summary={"count": 0, "mean": None, "histogram": None})
    assert run_charts.distribution(without, runs) is None


def test_trend_has_mean_and_reject_rate_per_window() -> None:
    runs = [run(day) for day in range(3)]
    chart = run_charts.trend(runs)
    assert chart is not None
    assert chart["labels"] == ["2026-10-20", "2026-10-21", "2026-10-22"]
    assert chart["mean"] == pytest.approx([0.30, 0.31, 0.32])
    assert chart["reject_rate"] == pytest.approx([30 / 3000, 31 / 3000, 32 / 3000])
    assert run_charts.trend([run(0, score_summary=None, rows_read=0)]) is None
    labels_only = run_charts.trend([run(0, score_summary={"count": 0, "mean": None, "labels": {"2": 9}})])
    assert labels_only is not None
    assert labels_only["mean"] == [None]
    assert run_charts.trend([]) is None


def test_window_labels_show_the_time_when_not_midnight() -> None:
    record = run(0)
    assert run_charts.window_label(record["window_start"].replace(hour=2)) == "2026-10-20 02:00"
    assert run_charts.window_label(None) == "?"


def test_drift_heatmap_has_one_cell_per_feature_and_window_score_last() -> None:
    runs = [run(day) for day in range(3)]
    rows = [row for r in runs[1:] for row in drift_rows(r, psi=0.06)]
    chart = run_charts.drift_heatmap(runs, rows)
    assert chart is not None
    assert chart["features"] == ["monthly_charges", "plan", "tenure_months", "(score)"]
    assert chart["windows"] == ["2026-10-21", "2026-10-22"]  # the first window has no drift rows
    assert len(chart["cells"]) == 8
    assert {c["y"]: c["psi"] for c in chart["cells"] if c["x"] == "2026-10-22"}["(score)"] == pytest.approx(0.24)
    assert run_charts.drift_heatmap(runs, []) is None
    reference = run_charts.versus_reference(rows, runs[2]["run_id"])
    assert reference is not None
    assert reference["reference"] == [0.6, 0.4]
    assert reference["drifted"] is True
    assert run_charts.versus_reference(rows, runs[0]["run_id"]) is None
    assert next(r["feature"] for r in run_charts.feature_drift(rows, runs[2]["run_id"])) == "(score)"


def test_shadow_trend_only_from_runs_with_a_challenger() -> None:
    runs = [run(0), run(1, shadow=SHADOW), run(2, shadow={**SHADOW, "label_agreement": 0.9})]
    chart = run_charts.shadow_trend(runs)
    assert chart is not None
    assert chart["labels"] == ["2026-10-21", "2026-10-22"]
    assert chart["label_agreement"] == [0.93, 0.9]
    assert chart["challengers"] == ["churn v3", "churn v3"]
    assert run_charts.shadow_trend(runs[:1]) is None


def test_cost_trend_has_cpu_per_million_rows_and_rows_per_cpu_second() -> None:
    runs = [run(day) for day in range(3)]
    chart = run_charts.cost_trend(runs)
    assert chart is not None
    assert chart["labels"] == ["2026-10-20", "2026-10-21", "2026-10-22"]
    assert chart["cpu_per_mrow"] == pytest.approx([3.5 / 2970 * 1e6] * 3)
    assert chart["score_cpu_per_mrow"] == pytest.approx([(0.6 + 0.01 * d) / 2970 * 1e6 for d in range(3)])
    assert chart["rows_per_cpu_second"] == pytest.approx([2970 / 3.5] * 3)
    assert run_charts.cost_trend([run(0, cpu_seconds=None, score_cpu_seconds=None)]) is None  # before CPU was recorded
