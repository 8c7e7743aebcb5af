-- MnemoLite core schema: settings, jobs, job failures, workers, events, the embed queues.
-- {{EMBEDDING_DIM}} is replaced by the configured model's dimension when this file is applied;
-- the value is recorded in mnemo_settings and checked on every later start.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE mnemo_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text NOT NULL,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    total       integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    done        integer NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed      integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    result      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_kind_idx ON jobs (status, kind, created_at DESC);

-- One row per failed item of a job, with its error: what GET /v1/jobs/{id} shows and
-- what POST /v1/jobs/{id}/retry re-queues.
CREATE TABLE job_failures (
    job_id    uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_kind text NOT NULL,
    item_id   text NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL DEFAULT 0,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_kind, item_id)
);

CREATE TABLE workers (
    id             text PRIMARY KEY,
    kind           text NOT NULL,
    host           text NOT NULL,
    pid            integer NOT NULL,
    version        text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    stopped_at     timestamptz,
    processed      bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    batch_size     integer NOT NULL DEFAULT 0
);
CREATE INDEX workers_kind_beat_idx ON workers (kind, last_heartbeat DESC);

CREATE TABLE events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "timestamp"      timestamptz NOT NULL DEFAULT now(),
    content          jsonb NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding        vector({{EMBEDDING_DIM}}),
    embedding_model  text,
    embedding_status text NOT NULL DEFAULT 'pending'
                     CHECK (embedding_status IN ('pending', 'done', 'failed', 'cancelled', 'skipped')),
    embedding_error  text,
    job_id           uuid REFERENCES jobs (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_embedding_hnsw_idx ON events USING hnsw (embedding vector_cosine_ops);
CREATE INDEX events_metadata_gin_idx ON events USING gin (metadata jsonb_path_ops);
CREATE INDEX events_timestamp_idx ON events ("timestamp" DESC);
CREATE INDEX events_job_idx ON events (job_id, embedding_status) WHERE job_id IS NOT NULL;

-- Queues. `embed` is hot: vacuum its table after a fixed number of dead rows, not a fraction.
SELECT pgmq.create('embed');
SELECT pgmq.create('embed_dlq');
-- Query embeddings live for seconds and need no durability.
SELECT pgmq.create_unlogged('embed_query');
ALTER TABLE pgmq.q_embed SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE pgmq.q_embed_query SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);

-- Job bookkeeping in one place: every writer moves a job's counters through this function,
-- in the same transaction as the results it writes. A job finishes when every item is
-- accounted for: `succeeded` if none failed, else `failed`. Cancelled jobs stay cancelled.
CREATE FUNCTION mnemo_job_progress(
    p_job uuid,
    p_done integer,
    p_failed integer,
    p_total integer DEFAULT 0,
    p_error text DEFAULT NULL,
    p_attempts integer DEFAULT 0
) RETURNS void LANGUAGE sql AS $$
    UPDATE jobs SET
        done = done + p_done,
        failed = failed + p_failed,
        total = total + p_total,
        attempts = greatest(attempts, p_attempts),
        error = coalesce(p_error, error),
        status = CASE
            WHEN status = 'cancelled' THEN status
            WHEN done + p_done + failed + p_failed >= total + p_total THEN
                CASE WHEN failed + p_failed > 0 THEN 'failed' ELSE 'succeeded' END
            ELSE 'running'
        END,
        started_at = coalesce(started_at, now()),
        finished_at = CASE
            WHEN status = 'cancelled' THEN finished_at
            WHEN done + p_done + failed + p_failed >= total + p_total THEN now()
            ELSE NULL
        END,
        updated_at = now()
    WHERE id = p_job
$$;
