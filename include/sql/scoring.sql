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

-- One row per scores partition a run loaded: which run, window and exact model artifact produced it.
-- Every score row carries its lineage_id, so lineage costs 8 bytes per row, not ~100, and it is
-- immutable: a later attempt of the same Airflow run gets a new lineage row.
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
-- The lineage row a successful run published (added in place on databases made before it existed).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = 'scoring' AND table_name = 'scoring_runs' AND column_name = 'lineage_id'
    ) THEN
        ALTER TABLE scoring.scoring_runs ADD COLUMN lineage_id bigint;
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
