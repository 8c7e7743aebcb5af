-- Operations: worker heartbeats with counters, system figures for /metrics and /ui,
-- dead-letter inspection and replay. Same format as queries.sql.

-- ============================== workers =============================

-- beat_with_stats --
-- Heartbeat of worker $1 adding the counters of the last interval: $2 processed, $3 failed,
-- $4 current batch size, $5 batches, $6 items in those batches, $7 busy seconds,
-- $8 batch-size histogram counts, $9 seconds-per-item histogram counts.
UPDATE workers SET
    last_heartbeat = now(),
    processed = processed + $2,
    failed = failed + $3,
    batch_size = $4,
    batches = batches + $5,
    batch_items = batch_items + $6,
    busy_seconds = busy_seconds + $7,
    batch_hist = mnemo_add_counts(batch_hist, $8::bigint[]),
    item_seconds_hist = mnemo_add_counts(item_seconds_hist, $9::bigint[])
WHERE id = $1;

-- worker_totals --
-- Per worker kind, over every worker row ever seen: live count (heartbeat younger than $1
-- seconds), lifetime counters and the summed histogram arrays.
SELECT kind,
       count(*) FILTER (
           WHERE stopped_at IS NULL AND last_heartbeat > now() - make_interval(secs => $1)
       )::int AS live,
       sum(processed)::bigint AS processed,
       sum(failed)::bigint AS failed,
       sum(batches)::bigint AS batches,
       sum(batch_items)::bigint AS batch_items,
       sum(busy_seconds)::float8 AS busy_seconds,
       mnemo_sum_counts(batch_hist) AS batch_hist,
       mnemo_sum_counts(item_seconds_hist) AS item_seconds_hist
FROM workers w
GROUP BY kind
ORDER BY kind;

-- ================================ jobs ==============================

-- job_counts --
-- Number of jobs per kind and status (no parameters).
SELECT kind, status, count(*)::bigint AS n FROM jobs GROUP BY kind, status ORDER BY kind, status;

-- recent_jobs --
-- The $1 newest jobs with up to three of their failures each (for the operator page).
SELECT j.*,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'item_kind', f.item_kind, 'item_id', f.item_id, 'error', f.error)), '[]')
        FROM (SELECT * FROM job_failures jf WHERE jf.job_id = j.id
              ORDER BY jf.failed_at DESC LIMIT 3) f) AS some_failures
FROM jobs j
ORDER BY j.created_at DESC, j.id DESC
LIMIT $1;

-- ============================ dead letters ==========================
-- PGMQ keeps each queue in its own table and a table name cannot be a parameter: one
-- statement per dead-letter queue.

-- queue_exists --
-- Does PGMQ queue $1 exist?
SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1);

-- dlq_list_embed_dlq --
-- Dead letters of embed_dlq with msg_id above $1, oldest first, at most $2; nothing consumed.
SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.q_embed_dlq
WHERE msg_id > $1 ORDER BY msg_id LIMIT $2;

-- dlq_list_index_dlq --
-- Dead letters of index_dlq with msg_id above $1, oldest first, at most $2; nothing consumed.
SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.q_index_dlq
WHERE msg_id > $1 ORDER BY msg_id LIMIT $2;

-- dlq_take_embed_dlq --
-- Lock dead letters of embed_dlq for replay: ids $1 (NULL = any) with msg_id above $2,
-- oldest first, at most $3; rows another replay holds are skipped.
SELECT msg_id, message FROM pgmq.q_embed_dlq
WHERE ($1::bigint[] IS NULL OR msg_id = ANY($1::bigint[])) AND msg_id > $2
ORDER BY msg_id LIMIT $3
FOR UPDATE SKIP LOCKED;

-- dlq_take_index_dlq --
-- Lock dead letters of index_dlq for replay: ids $1 (NULL = any) with msg_id above $2,
-- oldest first, at most $3; rows another replay holds are skipped.
SELECT msg_id, message FROM pgmq.q_index_dlq
WHERE ($1::bigint[] IS NULL OR msg_id = ANY($1::bigint[])) AND msg_id > $2
ORDER BY msg_id LIMIT $3
FOR UPDATE SKIP LOCKED;

-- dlq_clear_failures --
-- Forget the failures of items that go back to work ($1 job, $2 item kind, $3 item ids).
DELETE FROM job_failures WHERE job_id = $1 AND item_kind = $2 AND item_id = ANY($3::text[]);

-- dlq_reopen_job --
-- $2 failed items of job $1 are pending again: take them off its failed counter and re-open
-- it (running if some items are settled, else queued). A cancelled job is left alone.
UPDATE jobs SET
    failed = greatest(failed - $2, 0),
    status = CASE
        WHEN status = 'cancelled' THEN status
        WHEN done + greatest(failed - $2, 0) > 0 THEN 'running'
        ELSE 'queued'
    END,
    error = CASE WHEN status = 'cancelled' OR failed - $2 > 0 THEN error END,
    finished_at = CASE WHEN status = 'cancelled' THEN finished_at END,
    updated_at = now()
WHERE id = $1
RETURNING id, status, done, failed, total;

-- reopen_failed_events --
-- Put failed events ($1 ids) of job $2 (NULL = no job) back to pending; returns their ids.
UPDATE events SET embedding_status = 'pending', embedding_error = NULL
WHERE id = ANY($1::uuid[]) AND embedding_status = 'failed' AND job_id IS NOT DISTINCT FROM $2
RETURNING id::text AS id;
