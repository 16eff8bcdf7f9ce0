"""Benchmark: this pipeline's engine against hand-written scoring paths, side by side.

One run generates (or reuses) one window of feature rows in a dedicated embedded PostgreSQL,
registers one model, then runs every path on that same window and model, each in a FRESH
Python process so no path inherits another's imports, caches or heap:

    naive        pandas.read_sql over SQLAlchemy/psycopg2 -> predict_proba -> to_sql(method="multi")
    pandas_adbc  pandas.read_sql / to_sql over an ADBC connection (binary COPY both ways)
    polars_adbc  polars read_database_uri / write_database with engine="adbc"
    floor        the sum of three parts, each alone: binary COPY out to a discarding client,
                 predict on the in-memory window (compiled trees; scikit-learn's predict_proba measured
                 beside), ADBC ingest into an UNLOGGED table
    engine       batchscore.run.in_process.run_pipeline (plan, extract, predict, load)
    engine_no_drift  the same with drift.policy off (what watching drift costs)

The parent measures wall time (including interpreter start-up) and peak RSS of each worker's
process tree (PostgreSQL server processes are not in it); each worker measures its own work
after imports. This is a benchmark, not a test: figures are noisy on a shared machine.

    .venv/bin/python scripts/bench.py --rows 200000
    make bench BENCH_ARGS="--rows 2000000 --skip-naive"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _model_from_argv(argv: Sequence[str]) -> None:
    """``--model`` picks the bench model before benchkit reads it (at import), here and in the workers."""
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            os.environ["BENCH_MODEL"] = argv[i + 1]
        elif arg.startswith("--model="):
            os.environ["BENCH_MODEL"] = arg.split("=", 1)[1]


_model_from_argv(sys.argv)

from benchkit.data import (  # noqa: E402 (after --model is read)
    BENCH_DIR,
    DATABASE,
    ENGINE_QUERY,
    FEATURES,
    FLOOR_PARTS,
    OUTPUT_TABLES,
    PATH_LETTERS,
    REGISTRY,
    RESULTS_DIR,
    ROOT,
    SAMPLE_IDS,
    WINDOW_END,
    WINDOW_START,
    drift_figures,
    drop_table,
    ensure_features,
    ensure_model,
    sample_ids,
    sample_scores,
    settle,
    start_server,
    table_rows,
    warm_cache,
)
from benchkit.harness import Measurement, combine_floor, median_of, run_path, worker_command  # noqa: E402
from benchkit.paths import WORKERS, WorkerArgs, engine_kwargs, run_worker_mode  # noqa: E402
from benchkit.report import (  # noqa: E402
    Report,
    check_rows,
    check_scores,
    cpu_per_stage,
    dag_lines,
    dag_summary,
    drift_cost,
    format_table,
    result_line,
    where_the_time_goes,
    write_json,
)

# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the window (default 2,000,000)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive path (minutes at 2M+ rows)")
    parser.add_argument("--paths", default="a,b,c,d,e", help="paths to run: letters a-e or names (default all)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the table and retrain the model")
    parser.add_argument(
        "--model",
        choices=("trees", "pipeline"),
        default=None,
        help="trees: the bare HistGradientBoostingClassifier (default); pipeline: ColumnTransformer(imputer, "
        "one-hot) -> the same trees, over a text column the query derives (sets BENCH_MODEL for the workers)",
    )
    parser.add_argument(
        "--slice-rows", "--part-rows", dest="part_rows", type=int, default=None, help="execution.slice_rows"
    )
    parser.add_argument("--batch-rows", type=int, default=None, help="engine execution.batch_rows")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of each path but naive, interleaved; medians reported (default 3)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then one untimed engine run under py-spy: CPU by stage and function"
    )
    parser.add_argument("--keep-server", action="store_true", help="leave the bench PostgreSQL running")
    parser.add_argument(
        "--through-airflow", action="store_true", help="also time the window through the DAG on a real scheduler"
    )
    parser.add_argument(
        "--celery-workers",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[],
        help="with --through-airflow: also run the DAG on CeleryExecutor with each of these worker counts (e.g. 1,2)",
    )
    parser.add_argument(
        "--dag-small-rows",
        type=int,
        default=None,
        help="with --through-airflow: rows of the small window (default 1%% of --rows)",
    )
    parser.add_argument(
        "--dag-small-runs", type=int, default=1, help="with --through-airflow: steady small-window runs (median shown)"
    )
    parser.add_argument(
        "--dag-small-only",
        action="store_true",
        help="with --through-airflow: only the small window (a try of the DAG path in a minute, not ten)",
    )
    # Worker mode: the harness re-runs this script with --path for each measurement.
    parser.add_argument("--path", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--table", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < SAMPLE_IDS:
        parser.error(f"--rows must be at least {SAMPLE_IDS}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def selected_paths(spec: str, skip_naive: bool) -> list[str]:
    """``a,b,...`` or path names, in the canonical order a..e (``none``: only --through-airflow)."""
    if spec.strip() in ("", "none"):
        return []
    names = {PATH_LETTERS.get(item.strip(), item.strip()) for item in spec.split(",") if item.strip()}
    unknown = names - set(PATH_LETTERS.values())
    if unknown:
        raise SystemExit(f"unknown path(s): {', '.join(sorted(unknown))}; choose from {PATH_LETTERS}")
    if skip_naive:
        names.discard("naive")
    return [name for name in PATH_LETTERS.values() if name in names]


def run_all(paths: Sequence[str], url: str, ns: argparse.Namespace) -> Report:
    """Measure every selected path on the same window, ``--repeat`` rounds interleaved (naive once).

    Interleaving puts each path's rounds under the same machine conditions as the others',
    and the median resists the odd slow round on a shared machine. Each output is counted
    and sampled, then dropped.
    """
    from batchscore.run.in_process import run_pipeline

    run_id = f"bench-{ns.rows}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    report = Report(ns.rows, {}, {}, {}, [], sorted(engine_kwargs(run_pipeline)))
    ids = sample_ids(ns.rows)
    samples: dict[str, dict[int, float]] = {}
    rounds: dict[str, list[Measurement]] = {}
    for index in range(ns.repeat):
        for path in paths:
            if path == "naive" and index > 0:
                continue  # minutes per round, and an order of magnitude away: once is enough
            for worker in FLOOR_PARTS if path == "floor" else (path,):
                table = OUTPUT_TABLES.get(worker, "")
                args = WorkerArgs(url, ns.rows, table, f"{run_id}-{index}", ns.part_rows, ns.batch_rows)
                rounds.setdefault(worker, []).append(run_path(worker, args, f"round {index + 1}/{ns.repeat} "))
                if worker == "engine":
                    report.drift.append(drift_figures(url, args.run_id))
                if table:
                    report.rows_in_tables[worker] = table_rows(url, table)
                    samples[worker] = sample_scores(url, table, ids)
                    drop_table(url, table)
    for path in paths:
        if path == "floor":
            report.floor_parts = {part: median_of(rounds[part]) for part in FLOOR_PARTS}
            report.paths[path] = combine_floor(list(report.floor_parts.values()))
        else:
            report.paths[path] = median_of(rounds[path])
    check_rows(report)
    check_scores(report, samples, ids)
    return report


def airflow_measurement(url: str, ns: argparse.Namespace, celery_workers: int = 0) -> dict[str, Any]:
    """The same window through the scoring DAG on a real scheduler (benchkit/airflow_path.py)."""
    from benchkit.airflow_path import through_airflow

    drop_table(url, "airflow_scores")
    RESULTS_DIR.mkdir(exist_ok=True)
    return through_airflow(
        url=url,
        bench_dir=BENCH_DIR,
        registry=REGISTRY,
        query=ENGINE_QUERY,
        features=list(FEATURES),
        rows=ns.rows,
        window=(WINDOW_START, WINDOW_END),
        part_rows=ns.part_rows,
        celery_workers=celery_workers,
        small_rows=ns.dag_small_rows,
        small_runs=ns.dag_small_runs,
        small_only=ns.dag_small_only,
    )


def profile_measurement(url: str, ns: argparse.Namespace) -> str:
    """One more engine run, under py-spy (not timed: sampling slows it a little); its summary."""
    from benchkit.profile import profile, summarize

    table = OUTPUT_TABLES["engine"]
    args = WorkerArgs(
        url, ns.rows, table, f"bench-profile-{datetime.now(UTC):%Y%m%dT%H%M%S}", ns.part_rows, ns.batch_rows
    )
    drop_table(url, table)
    settle(url)
    print("run: engine under py-spy ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = profile(
            worker_command("engine", args, Path(tmp) / "result.json"), RESULTS_DIR / f"engine-{ns.rows}.folded"
        )
    drop_table(url, table)
    return f"{summarize(out)}\n  stacks: {out.relative_to(ROOT)} (collapsed; e.g. flamegraph.pl or speedscope.app)"


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.path:
        args = WorkerArgs(ns.url, ns.rows, ns.table, ns.run_id, ns.part_rows, ns.batch_rows)
        return run_worker_mode(ns.path, args, ns.result_file)
    paths = selected_paths(ns.paths, ns.skip_naive)
    pg = start_server()
    try:
        url = pg.url(DATABASE)
        generated = ensure_features(url, ns.rows, ns.regenerate)
        ensure_model(retrain=ns.regenerate)
        if not generated:
            warm_cache(url)
        report = run_all(paths, url, ns) if paths else None
        airflow = airflow_measurement(url, ns) if ns.through_airflow else None
        if airflow is not None and ns.celery_workers:
            airflow["celery"] = {n: airflow_measurement(url, ns, celery_workers=n) for n in ns.celery_workers}
        profiled = profile_measurement(url, ns) if ns.profile else None
    finally:
        if not ns.keep_server:
            pg.stop()
    if airflow is not None:
        print("\n" + dag_lines(airflow))
        (RESULTS_DIR / f"bench-airflow-{ns.rows}.json").write_text(json.dumps(airflow, indent=2))
    if profiled is not None:
        print(f"\n{profiled}")
    if report is None:
        return 0
    print()
    print(format_table(report))
    s = report.summary()
    print(
        f"\nbest_handwritten={s['best_handwritten_seconds']:.2f}s  speedup_vs_naive={s['speedup_vs_naive']:.2f}  "
        f"speedup_vs_best_handwritten={s['speedup_vs_best_handwritten']:.2f}  "
        f"fraction_of_floor={s['fraction_of_floor']:.2f}  run_pipeline extra kwargs: {report.run_pipeline_kwargs}"
    )
    print(where_the_time_goes(report))
    print(cpu_per_stage(report))
    print(drift_cost(report))
    if ns.keep_server:
        print(f"server kept running: {url}")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    dag = dag_summary(report, airflow)
    if dag:
        print(
            f"dag: trigger to success {dag['dag_seconds']:.1f}s = {dag['dag_speedup_vs_best_handwritten']:.2f}x "
            f"the best hand-written script, {dag['dag_vs_engine']:.2f}x the engine's time"
        )
    print(f"results: {write_json(report, airflow).relative_to(ROOT)}")
    print(result_line(report, airflow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
