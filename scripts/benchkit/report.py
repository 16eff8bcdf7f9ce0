"""The report: the side-by-side table, where the engine's time goes, the DAG path, RESULT line and JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit.data import FLOOR_PARTS, MAX_SCORE_DIFF, RESULTS_DIR
from benchkit.harness import Measurement


@dataclass
class Report:
    """Everything one bench run measured and checked."""

    rows: int
    paths: dict[str, Measurement]
    floor_parts: dict[str, Measurement]
    rows_in_tables: dict[str, int | None]
    warnings: list[str]
    run_pipeline_kwargs: list[str]
    drift: list[dict[str, float]] = field(default_factory=list)  # per engine round: batchscore.scoring.drift's cost

    def seconds(self, path: str) -> float:
        return self.paths[path].seconds if path in self.paths else math.nan

    def summary(self) -> dict[str, float]:
        engine = self.seconds("engine")
        hand = [self.seconds(p) for p in ("pandas_adbc", "polars_adbc") if p in self.paths]
        best = min(hand) if hand else math.nan
        hand_wall = [self.paths[p].wall_seconds for p in ("pandas_adbc", "polars_adbc") if p in self.paths]
        engine_wall = self.paths["engine"].wall_seconds if "engine" in self.paths else math.nan
        score_cpu = self.paths["engine"].extra.get("cpu_score", math.nan) if "engine" in self.paths else math.nan
        read_cpu = self.paths["engine"].extra.get("cpu_read", math.nan) if "engine" in self.paths else math.nan
        return {
            "best_handwritten_seconds": best,
            "wall_speedup_vs_best_handwritten": (min(hand_wall) if hand_wall else math.nan) / engine_wall,
            "predict_cpu_s_per_mrow": score_cpu / self.rows * 1e6,
            "decode_cpu_s_per_mrow": read_cpu / self.rows * 1e6,  # the extract: COPY transport and decoding
            "speedup_vs_naive": self.seconds("naive") / engine,
            "speedup_vs_best_handwritten": best / engine,
            "fraction_of_floor": self.seconds("floor") / engine,
            "peak_rss_mb": self.paths["engine"].peak_rss_mb if "engine" in self.paths else math.nan,
        }


def format_table(report: Report) -> str:
    """path | median seconds | wall incl. start-up | peak RSS MB | rows written | vs engine | busy cores | rounds."""
    engine = report.seconds("engine")
    header = (
        f"{'path':<16}{'seconds':>10}{'wall s':>10}{'peak RSS MB':>13}{'rows written':>15}{'vs engine':>11}"
        f"{'cores busy':>12}  {'rounds (s)'}"
    )
    lines = [header, "-" * len(header)]

    def line(name: str, m: Measurement) -> str:
        ratio = m.seconds / engine
        return (
            f"{name:<16}{m.seconds:>10.2f}{m.wall_seconds:>10.2f}{m.peak_rss_mb:>13.0f}"
            f"{m.rows_written:>15,}{ratio:>10.2f}x{m.cores_busy:>12.2f}  {' '.join(f'{r:.2f}' for r in m.rounds)}"
        )

    for path, m in report.paths.items():
        lines.append(line(path + (" (sum)" if path == "floor" else ""), m))
        if path == "floor":
            lines += [line("  " + part.removeprefix("floor_"), report.floor_parts[part]) for part in FLOOR_PARTS]
    return "\n".join(lines)


def where_the_time_goes(report: Report) -> str:
    """The engine's CPU seconds by thread role, and what the rest of the machine (PostgreSQL) used meanwhile."""
    engine = report.paths.get("engine")
    if engine is None or not engine.thread_cpu:
        return ""
    busy = engine.cores_busy * engine.seconds
    ours = sum(engine.thread_cpu.values())
    roles = ", ".join(f"{role} {cpu:.1f}" for role, cpu in engine.thread_cpu.items())
    return (
        f"engine CPU seconds by thread: {roles}; PostgreSQL and the rest of the machine {busy - ours:.1f}; "
        f"{engine.cores_busy:.2f} of {os.cpu_count()} cores busy on average"
    )


def cpu_per_stage(report: Report) -> str:
    """The engine's CPU seconds per stage (as its run record has them) and the parts' cost per million rows."""
    engine = report.paths.get("engine")
    lines = []
    per_m = 1e6 / report.rows
    if engine is not None and engine.extra:
        x = engine.extra
        stages = ", ".join(
            f"{stage} {x[f'cpu_{stage}']:.2f}"
            for stage in ("startup", "model", "read", "score", "load", "publish")
            if f"cpu_{stage}" in x
        )
        lines.append(
            f"engine CPU seconds per stage (scoring_runs): {stages}; all {x.get('cpu_total', math.nan):.2f} "
            f"= {x.get('rows_per_cpu_second', math.nan):,.0f} rows per CPU second "
            f"(wall {engine.seconds:.2f}s, process wall {engine.wall_seconds:.2f}s)"
        )
    parts = report.floor_parts
    cost = []
    if "floor_copy" in parts:
        cost.append(f"COPY out {parts['floor_copy'].seconds * per_m:.2f} s (server, to a discarding client)")
    if engine is not None and "cpu_read" in engine.extra:
        x = engine.extra
        if "cpu_decoding" in x:  # the COPY decoder: its thread's transport (libpq) and decoding, apart
            transport = x["cpu_copy_threads"] - x["cpu_decoding"]
            cost.append(
                f"decode {x['cpu_read'] * per_m:.2f} CPU-s (engine's extract: the COPY's transport from libpq "
                f"{transport * per_m:.2f} + the COPY decoder {x['cpu_decoding'] * per_m:.2f})"
            )
        else:
            cost.append(f"decode {x['cpu_read'] * per_m:.2f} CPU-s (engine's extract thread, ADBC)")
        cost.append(f"score {engine.extra['cpu_score'] * per_m:.2f} CPU-s (engine's scoring threads)")
        cost.append(f"load {engine.extra['cpu_load'] * per_m:.2f} CPU-s (engine's COPY in, client side)")
    predict = parts.get("floor_predict")
    if predict is not None and predict.extra:
        cost.append(
            f"predict alone {predict.extra['compiled_cpu'] * per_m:.2f} CPU-s compiled trees, "
            f"{predict.extra['sklearn_cpu'] * per_m:.2f} CPU-s scikit-learn's predict_proba"
        )
    if predict is not None and "prep_cpu" in predict.extra:
        cost.append(
            f"of which the Pipeline's steps before the trees {predict.extra['prep_cpu'] * per_m:.2f} CPU-s "
            f"over Arrow ({predict.extra.get('sklearn_prep_cpu', math.nan) * per_m:.2f} in scikit-learn), "
            f"the compiled trees {predict.extra['trees_cpu'] * per_m:.2f} CPU-s"
        )
    if "floor_ingest" in parts:
        cost.append(f"ingest {parts['floor_ingest'].seconds * per_m:.2f} s (floor)")
    if cost:
        lines.append("cost per million rows: " + "; ".join(cost))
    return "\n".join(lines)


def drift_cost(report: Report) -> str:
    """What watching drift cost the engine: its counting thread-seconds, and the engine with and without it."""
    if not report.drift:
        return ""
    counted = sum(d["drift_thread_seconds"] for d in report.drift) / len(report.drift)
    scoring = sum(d["score_thread_seconds"] for d in report.drift) / len(report.drift)
    engine = report.paths.get("engine")
    line = f"drift: counting {counted:.2f} CPU-s on the scoring threads (which ran {scoring:.1f} thread-s)"
    if engine is not None and engine.thread_cpu:
        line += f" ({counted / sum(engine.thread_cpu.values()):.1%} of the engine's CPU seconds)"
    if "engine_no_drift" in report.paths:
        with_drift, without = report.seconds("engine"), report.seconds("engine_no_drift")
        line += f"; engine {with_drift:.2f}s with drift, {without:.2f}s without ({with_drift / without - 1:+.1%})"
    return line


def dag_summary(report: Report, airflow: dict[str, Any] | None) -> dict[str, Any]:
    """The DAG path against the best script and the engine, measured in the same run (empty without it)."""
    if airflow is None:
        return {}
    s = report.summary()
    engine = report.paths.get("engine")
    best = s["best_handwritten_seconds"]
    small = airflow.get("small", {})
    return {
        "dag_seconds": airflow["seconds"],
        "dag_speedup_vs_best_handwritten": best / airflow["seconds"] if best and not math.isnan(best) else math.nan,
        "dag_vs_engine": airflow["seconds"] / engine.seconds if engine else math.nan,
        "dag_task_seconds": airflow["task_seconds"],
        "dag_small_rows": small.get("rows"),
        "dag_small_seconds": small.get("seconds", math.nan),
        "dag_small_first_run_seconds": small.get("first_run_seconds", math.nan),
    }


def dag_lines(airflow: dict[str, Any]) -> str:
    """The DAG path's own figures: each window's trigger-to-success, its tasks, and where each slice's time went."""
    lines = []
    small = airflow.get("small")
    if small:
        lines.append(
            f"through Airflow, small window ({small.get('rows') or 0:,} rows): first run after start "
            f"{small['first_run_seconds']:.1f}s, then {small['seconds']:.1f}s trigger to success "
            f"(tasks: {', '.join(f'{k} {v}' for k, v in small['task_seconds'].items())})"
        )
        if small.get("timeline"):
            from benchkit.dag_timeline import timeline_lines

            lines.append(f"  steady runs {small.get('steady_seconds')}; the median run's timeline:")
            lines.append(timeline_lines(small["timeline"]))
            if small.get("first_run_timeline"):
                lines.append("  the first run's timeline:")
                lines.append(timeline_lines(small["first_run_timeline"]))
    if "seconds" not in airflow:  # --dag-small-only
        return "\n".join(lines)
    lines.append(
        f"through Airflow, the window ({airflow.get('rows') or 0:,} rows): {airflow['seconds']:.1f}s "
        "trigger to success "
        f"(tasks: {', '.join(f'{k} {v}' for k, v in airflow['task_seconds'].items())}; "
        f"plan's own work {airflow.get('plan_seconds') or math.nan:.1f}s)"
    )
    for part in airflow.get("slices", []):
        lines.append(
            f"  slice {part['index']}: {part['rows_in']:,} rows in {part['seconds']:.1f}s; process start-up "
            f"{part['startup_seconds']:.1f}s, first row {part['first_row_seconds']:.1f}s after process start, "
            f"read {part['read_seconds']:.1f}s, scoring {part['score_seconds']:.1f} thread-s, "
            f"key check {part.get('unique_key_seconds', 0.0):.1f}s"
        )
    for workers, run in sorted((airflow.get("celery") or {}).items()):
        cpu = ", ".join(f"{name} {seconds:.1f} CPU-s" for name, seconds in run.get("worker_cpu_seconds", {}).items())
        lines.append(
            f"through Celery, {workers} worker(s) of concurrency 1: the window {run['seconds']:.1f}s trigger to "
            f"success (tasks: {', '.join(f'{k} {v}' for k, v in run['task_seconds'].items())}; {cpu}); "
            f"small window {run.get('small', {}).get('seconds', math.nan):.1f}s"
        )
    return "\n".join(lines)


def result_line(report: Report, airflow: dict[str, Any] | None = None) -> str:
    s = report.summary()
    rss = "nan" if math.isnan(s["peak_rss_mb"]) else str(round(s["peak_rss_mb"]))
    line = (
        f"RESULT rows={report.rows} speedup_vs_naive={s['speedup_vs_naive']:.2f} "
        f"speedup_vs_best_handwritten={s['speedup_vs_best_handwritten']:.2f} "
        f"fraction_of_floor={s['fraction_of_floor']:.2f} peak_rss_mb={rss} "
        f"predict_cpu_s_per_mrow={s['predict_cpu_s_per_mrow']:.3f} "
        f"decode_cpu_s_per_mrow={s['decode_cpu_s_per_mrow']:.3f} "
        f"wall_speedup_vs_best_handwritten={s['wall_speedup_vs_best_handwritten']:.2f}"
    )
    dag = dag_summary(report, airflow)
    if dag:
        speedup = dag["dag_speedup_vs_best_handwritten"]
        line += f" dag_seconds={dag['dag_seconds']:.1f} dag_speedup_vs_best_handwritten={speedup:.2f}"
        line += f" dag_vs_engine={dag['dag_vs_engine']:.2f} dag_small_seconds={dag['dag_small_seconds']:.1f}"
    for workers, run in sorted(((airflow or {}).get("celery") or {}).items()):
        line += f" dag_celery{workers}_seconds={run['seconds']:.1f}"
    return line


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_json(report: Report, airflow: dict[str, Any] | None = None) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench-{report.rows}.json"
    data = {
        "rows": report.rows,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "summary": report.summary() | dag_summary(report, airflow),
        "paths": {name: asdict(m) for name, m in report.paths.items()},
        "floor_parts": {name: asdict(m) for name, m in report.floor_parts.items()},
        "rows_in_tables": report.rows_in_tables,
        "run_pipeline_kwargs": report.run_pipeline_kwargs,
        "warnings": report.warnings,
    }
    out.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- checks


def check_rows(report: Report) -> None:
    """Each writing path must have written exactly the window's rows."""
    for path, count in report.rows_in_tables.items():
        if count != report.rows:
            report.warnings.append(f"{path} wrote {count} rows to its table, expected {report.rows}")


def check_scores(report: Report, samples: dict[str, dict[int, float]], ids: Sequence[int]) -> None:
    """The engine's scores equal pandas_adbc's on a fixed sample of ids."""
    if "engine" not in samples or "pandas_adbc" not in samples:
        print("note: score comparison skipped (needs both pandas_adbc and engine)")
        return
    engine, reference = samples["engine"], samples["pandas_adbc"]
    missing = [i for i in ids if i not in engine or i not in reference]
    if missing:
        report.warnings.append(f"score check: {len(missing)} of {len(ids)} sampled ids missing from a table")
        return
    diff = max(abs(engine[i] - reference[i]) for i in ids)
    if not diff < MAX_SCORE_DIFF:
        report.warnings.append(f"score check: engine vs pandas_adbc max abs diff {diff:.3g} >= {MAX_SCORE_DIFF}")
    else:
        print(f"check: engine scores equal pandas_adbc's on {len(ids)} sampled ids (max abs diff {diff:.1e})")
