-- Audit and quarantine tables shared by every pipeline (applied idempotently by the load step).
CREATE SCHEMA IF NOT EXISTS scoring;

-- One row per (pipeline, Airflow run): what was read, scored, rejected and written, and how long each stage took.
CREATE TABLE IF NOT EXISTS scoring.scoring_runs (
    pipeline        text             NOT NULL,
    run_id          text             NOT NULL,
    window_start    timestamptz      NOT NULL,
    window_end      timestamptz      NOT NULL,
    status          text             NOT NULL CHECK (status IN ('running', 'success', 'failed', 'dry_run')),
    model_name      text             NOT NULL,
    model_version   integer          NOT NULL,
    model_sha256    text             NOT NULL,
    output_table    text             NOT NULL,
    rows_read       bigint,
    rows_scored     bigint,
    rows_rejected   bigint,
    rows_written    bigint,
    extract_seconds double precision,
    predict_seconds double precision,
    load_seconds    double precision,
    score_summary   jsonb,
    error           text,
    started_at      timestamptz      NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (pipeline, run_id)
);
CREATE INDEX IF NOT EXISTS scoring_runs_window_idx ON scoring.scoring_runs (pipeline, window_start);

-- One row per slice a run loaded: which run, window, key range and exact model artifact produced it.
-- Every score row carries its lineage_id, so lineage costs 8 bytes per row, not ~100, and it is
-- immutable: a later attempt of the same slice gets a new lineage row (and a new slice table).
CREATE TABLE IF NOT EXISTS scoring.lineage (
    lineage_id      bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline        text             NOT NULL,
    output_table    text             NOT NULL,
    window_start    timestamptz      NOT NULL,
    window_end      timestamptz      NOT NULL,
    run_id          text             NOT NULL,
    model_name      text             NOT NULL,
    model_version   integer          NOT NULL,
    model_sha256    text             NOT NULL,
    rows_written    bigint,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX IF NOT EXISTS lineage_run_idx ON scoring.lineage (pipeline, run_id);
-- Columns added in place on databases made by earlier versions. Checked first: ALTER TABLE would
-- take an exclusive lock on every run even when there is nothing to add.
DO $$
DECLARE
    missing record;
BEGIN
    FOR missing IN
        SELECT t.tab, t.col, t.definition FROM (VALUES
            ('scoring_runs', 'lineage_id', 'bigint'),                    -- the first slice's lineage row
            ('scoring_runs', 'plan_seconds', 'double precision'),
            ('scoring_runs', 'slices', 'jsonb'),                         -- per slice: bounds, rows, seconds, host
            ('lineage', 'slice_index', 'integer NOT NULL DEFAULT 0'),
            ('lineage', 'key_lower', 'text'),                            -- the slice's key range; NULL is open
            ('lineage', 'key_upper', 'text'),
            ('scoring_runs', 'failed_stage', 'text'),                    -- plan, score_slice or publish
            ('scoring_runs', 'remedy', 'text'),                          -- what to do about the error
            ('scoring_runs', 'unused_columns', 'text[]'),                -- source columns the model does not use
            ('scoring_runs', 'drift_status', 'text'),                    -- ok, warn, held or few_rows; NULL: not watched
            ('scoring_runs', 'drift_max_psi', 'double precision'),       -- the largest PSI of the run's drift rows
            ('scoring_runs', 'shadow', 'jsonb'),                         -- the challenger: model, table, agreement
            ('scoring_runs', 'model_source', 'jsonb'),                   -- where the model came from (MLflow: uri, version, run)
            ('scoring_runs', 'volume', 'jsonb'),                          -- the volume guard's verdict: rows, floor, basis
            -- CPU seconds per stage, summed over the slices (batchscore.sink.run_cost); the engine's processes only
            ('scoring_runs', 'read_cpu_seconds', 'double precision'),    -- decoding the source's stream
            ('scoring_runs', 'score_cpu_seconds', 'double precision'),   -- validation, prediction, drift counts
            ('scoring_runs', 'load_cpu_seconds', 'double precision'),    -- the COPY into the slice tables, key checks
            ('scoring_runs', 'publish_cpu_seconds', 'double precision'), -- the publish transaction (client side)
            ('scoring_runs', 'startup_cpu_seconds', 'double precision'), -- task processes before their slice: imports
            ('scoring_runs', 'model_cpu_seconds', 'double precision'),   -- loading the model, building its scorer
            ('scoring_runs', 'cpu_seconds', 'double precision'),         -- all of the run's slice processes and publish
            ('scoring_runs', 'rows_per_cpu_second', 'double precision'), -- rows scored per CPU second of all of it
            ('scoring_runs', 'alerts_sent', 'text[]'),                   -- notify: events already sent for this run (once each)
            ('scoring_runs', 'deadline_missed_at', 'timestamptz')        -- when the DAG's deadline alert fired for this run
        ) AS t (tab, col, definition)
        WHERE NOT EXISTS (
            SELECT 1 FROM information_schema.columns c
            WHERE c.table_schema = 'scoring' AND c.table_name = t.tab AND c.column_name = t.col
        )
    LOOP
        EXECUTE format('ALTER TABLE scoring.%I ADD COLUMN %I %s', missing.tab, missing.col, missing.definition);
    END LOOP;
    -- A run that fails in plan (a bad window, an unknown model) is recorded too, before its window or
    -- model is known: those columns allow NULL since then.
    FOR missing IN
        SELECT c.column_name AS col FROM information_schema.columns c
        WHERE c.table_schema = 'scoring' AND c.table_name = 'scoring_runs' AND c.is_nullable = 'NO'
          AND c.column_name IN ('window_start', 'window_end', 'model_name', 'model_version', 'model_sha256',
                                'output_table')
    LOOP
        EXECUTE format('ALTER TABLE scoring.scoring_runs ALTER COLUMN %I DROP NOT NULL', missing.col);
    END LOOP;
    -- The volume guard reads a table's published windows (batchscore.sink.volume_guard). Checked first, as the
    -- columns are: CREATE INDEX IF NOT EXISTS would lock the table against writers on every run.
    IF to_regclass('scoring.lineage_window_idx') IS NULL THEN
        CREATE INDEX lineage_window_idx ON scoring.lineage (output_table, window_start, window_end);
    END IF;
END
$$;

-- Rows that failed validation, with the reason and the row as it arrived. Replaced per window like the scores.
CREATE TABLE IF NOT EXISTS scoring.rejects (
    pipeline      text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    run_id        text        NOT NULL,
    entity_key    text,
    reason        text        NOT NULL,
    row_data      jsonb,
    rejected_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rejects_window_idx ON scoring.rejects (pipeline, window_start);
-- The slice that rejected the row (added in place on older databases; checked first, as above).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = 'scoring' AND table_name = 'rejects' AND column_name = 'lineage_id'
    ) THEN
        ALTER TABLE scoring.rejects ADD COLUMN lineage_id bigint;
    END IF;
END
$$;

-- Drift per run: for each feature, and for the model's output (feature '(score)'), the PSI of the
-- window's distribution against the model's training reference, with both distributions as
-- fractions over the same bins. Written with the run's record (the publish transaction).
CREATE TABLE IF NOT EXISTS scoring.drift (
    pipeline      text             NOT NULL,
    run_id        text             NOT NULL,
    window_start  timestamptz      NOT NULL,
    window_end    timestamptz      NOT NULL,
    feature       text             NOT NULL,
    kind          text             NOT NULL CHECK (kind IN ('numeric', 'categorical', 'score')),
    psi           double precision NOT NULL,
    threshold     double precision NOT NULL,
    drifted       boolean          NOT NULL,
    bins          jsonb            NOT NULL,  -- {"labels": [...], "reference": [...], "observed": [...]}
    computed_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, run_id, feature)
);
CREATE INDEX IF NOT EXISTS drift_window_idx ON scoring.drift (pipeline, window_start);

-- What happened to a run beside its outcome: a publish that waited for readers (and who held the
-- window), a slice attempt replaced after a lost try, a clear noticed, a sweep of old slice tables.
CREATE TABLE IF NOT EXISTS scoring.run_events (
    event_id      bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline      text             NOT NULL,
    run_id        text,
    at            timestamptz      NOT NULL DEFAULT now(),
    stage         text             NOT NULL,
    event         text             NOT NULL,
    detail        text             NOT NULL
);
CREATE INDEX IF NOT EXISTS run_events_run_idx ON scoring.run_events (pipeline, run_id);

-- Who owns each table or view a pipeline writes (its scores table, <table>_shadow, their lineage
-- views): claimed by plan with INSERT ... ON CONFLICT, so two pipelines can never both write one.
CREATE TABLE IF NOT EXISTS scoring.table_owners (
    table_name    text             PRIMARY KEY,  -- schema.name
    pipeline      text             NOT NULL,
    role          text             NOT NULL CHECK (role IN ('scores', 'shadow', 'lineage view')),
    claimed_at    timestamptz      NOT NULL DEFAULT now()
);

-- Realised performance: one row per (pipeline, window, model version, role) once the window's outcomes
-- are complete. Re-evaluating a window replaces all of its rows (a re-scored window is judged under
-- the version that scored it now). metrics: classifier (positive_rate, roc_auc, pr_auc, log_loss,
-- brier) or regressor (rmse, mae, r2, bias, mean_outcome); curves: calibration per score decile, or
-- the residuals' deciles. status 'no_labels': a clusterer, nothing to compare with; reason says so.
CREATE TABLE IF NOT EXISTS scoring.performance (
    pipeline             text        NOT NULL,
    window_start         timestamptz NOT NULL,
    window_end           timestamptz NOT NULL,
    model_name           text        NOT NULL,
    model_version        integer     NOT NULL,
    role                 text        NOT NULL CHECK (role IN ('champion', 'challenger')),
    task                 text        NOT NULL,
    status               text        NOT NULL CHECK (status IN ('evaluated', 'no_labels')),
    reason               text,
    rows_scored          bigint      NOT NULL,   -- published score rows of the window
    rows_matched         bigint      NOT NULL,   -- of those, with an outcome
    rows_without_outcome bigint      NOT NULL,   -- scored, no outcome (or a NULL one): counted, not guessed
    outcomes_unmatched   bigint      NOT NULL,   -- outcomes for keys this model did not score in the window
    metrics              jsonb       NOT NULL DEFAULT '{}',
    curves               jsonb       NOT NULL DEFAULT '[]',
    run_id               text,                   -- the evaluating Airflow run
    evaluated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, window_start, window_end, model_version, role)
);

-- Every decision on a promotion request (promote_<name>): approved, rejected or expired, by whom,
-- on what evidence. An approval also moves the alias and is in the registry's alias history.
CREATE TABLE IF NOT EXISTS scoring.promotion_decisions (
    pipeline        text        NOT NULL,
    run_id          text        NOT NULL,
    model_name      text        NOT NULL,
    alias           text        NOT NULL,
    from_version    integer,
    to_version      integer     NOT NULL,
    decision        text        NOT NULL CHECK (decision IN ('approved', 'rejected', 'expired')),
    decided_by      text,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    evidence        jsonb       NOT NULL,
    PRIMARY KEY (pipeline, run_id)
);
