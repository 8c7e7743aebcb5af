-- A job's times never run backwards. A worker's write that lands after a cancel (the batch
-- it already held) used to set `started_at` after `finished_at` on a job cancelled before
-- it started, and `updated_at` to its own transaction's start, earlier than the cancel's.
-- A job cancelled before any work keeps `started_at` null; `updated_at` only moves forward.
CREATE OR REPLACE FUNCTION mnemo_job_progress(
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
        started_at = CASE
            WHEN status = 'cancelled' THEN started_at
            ELSE coalesce(started_at, now())
        END,
        finished_at = CASE
            WHEN status = 'cancelled' THEN finished_at
            WHEN done + p_done + failed + p_failed >= total + p_total THEN now()
            ELSE NULL
        END,
        updated_at = greatest(updated_at, now())
    WHERE id = p_job
$$;
