-- Every runtime SQL statement of MnemoLite, named by intent.
-- A block starts with `-- name --`, then a one-line purpose naming its $ parameters.

-- =============================== jobs ===============================

-- create_job --
-- Create a job ($1 kind, $2 total items, $3 params); a job with nothing to do is already done.
INSERT INTO jobs (kind, total, params, status, finished_at)
VALUES ($1, $2, $3, CASE WHEN $2 = 0 THEN 'succeeded' ELSE 'queued' END,
        CASE WHEN $2 = 0 THEN now() END)
RETURNING id;

-- get_job --
-- One job by id ($1).
SELECT * FROM jobs WHERE id = $1;

-- job_exists --
-- Is there a job $1?
SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1);

-- list_jobs --
-- Newest first, optional filters ($1 status, $2 kind), keyset cursor ($3 created_at, $4 id), $5 limit.
SELECT * FROM jobs
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5;

-- job_failures --
-- The failed items of a job ($1), newest first, at most $2.
SELECT item_kind, item_id, error, attempts, failed_at FROM job_failures
WHERE job_id = $1 ORDER BY failed_at DESC LIMIT $2;

-- job_progress --
-- Move a job's counters ($1 job, $2 done, $3 failed, $4 total delta, $5 error, $6 attempts).
SELECT mnemo_job_progress($1, $2, $3, $4, $5, $6);

-- record_failure --
-- Remember why an item failed ($1 job, $2 item kind, $3 item id, $4 error, $5 attempts).
INSERT INTO job_failures (job_id, item_kind, item_id, error, attempts)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (job_id, item_kind, item_id)
DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, failed_at = now();

-- cancel_job --
-- Cancel a queued or running job ($1); returns the job, or nothing if it was not cancellable.
-- Its times never run backwards: a worker's write may carry a later time than this now().
UPDATE jobs SET status = 'cancelled',
    finished_at = greatest(updated_at, now()), updated_at = greatest(updated_at, now())
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING *;

-- cancel_job_because --
-- Cancel job $1 if it is queued or running, with the reason $2 as its error.
UPDATE jobs SET status = 'cancelled', error = $2,
    finished_at = greatest(updated_at, now()), updated_at = greatest(updated_at, now())
WHERE id = $1 AND status IN ('queued', 'running');

-- lock_job --
-- Lock a job row for a state change ($1).
SELECT * FROM jobs WHERE id = $1 FOR UPDATE;

-- take_failures --
-- Remove and return a job's failed items of one kind, to re-queue them ($1 job, $2 item kind).
DELETE FROM job_failures WHERE job_id = $1 AND item_kind = $2 RETURNING item_id;

-- reopen_job --
-- Put a failed or cancelled job back to work ($1 job, $2 failed items that were re-queued):
-- running if some of its items are settled, else queued (as dlq_reopen_job does).
UPDATE jobs SET
    status = CASE WHEN done + greatest(failed - $2, 0) > 0 THEN 'running' ELSE 'queued' END,
    failed = greatest(failed - $2, 0), error = NULL,
    finished_at = NULL, updated_at = now()
WHERE id = $1
RETURNING *;

-- ============================== events ==============================

-- insert_events --
-- Insert events from parallel arrays ($1 ids, $2 timestamps, $3 contents, $4 metadata,
-- $5 embeddings (NULL entries allowed), $6 model per row, $7 status per row, $8 job id).
INSERT INTO events (id, "timestamp", content, metadata, embedding, embedding_model,
                    embedding_status, job_id)
SELECT u.id, u.ts, u.content, u.metadata, u.embedding, u.model, u.status, $8
FROM unnest($1::uuid[], $2::timestamptz[], $3::jsonb[], $4::jsonb[], $5::vector[],
            $6::text[], $7::text[]) AS u(id, ts, content, metadata, embedding, model, status);

-- ingest_events --
-- Insert events, their job and their queue messages in one statement (atomic on its own: one
-- round trip). $1 job id, $2 job kind, $3 job total, $4 job params; events from parallel
-- arrays ($5 ids, $6 timestamps, $7 contents, $8 metadata, $9 embeddings (NULL entries
-- allowed), $10 model per row, $11 status per row); $12 queue, $13 messages (jsonb[], not
-- empty). Returns how many messages were sent.
WITH job AS (
    INSERT INTO jobs (id, kind, total, params) VALUES ($1, $2, $3, $4)
), ev AS (
    INSERT INTO events (id, "timestamp", content, metadata, embedding, embedding_model,
                        embedding_status, job_id)
    SELECT u.id, u.ts, u.content, u.metadata, u.embedding, u.model, u.status, $1
    FROM unnest($5::uuid[], $6::timestamptz[], $7::jsonb[], $8::jsonb[], $9::vector[],
                $10::text[], $11::text[]) AS u(id, ts, content, metadata, embedding, model, status)
)
SELECT count(*) FROM pgmq.send_batch($12, $13::jsonb[]);

-- get_event --
-- One event by id ($1).
SELECT id, "timestamp", content, metadata, embedding_model, embedding_status, embedding_error,
       job_id, created_at, embedding IS NOT NULL AS has_embedding
FROM events WHERE id = $1;

-- list_events --
-- Newest first by time: metadata containing $1, time range [$2, $3], embedding status $4 (NULL:
-- any), keyset cursor ($5 timestamp, $6 id), $7 rows. The cursor is written as a bound on the
-- indexed "timestamp" and a tie-break on id, so each page starts at its place in the index.
SELECT id, "timestamp", content, metadata, embedding_model, embedding_status, embedding_error,
       job_id, created_at
FROM events
WHERE ($1::jsonb IS NULL OR metadata @> $1::jsonb)
  AND ($2::timestamptz IS NULL OR "timestamp" >= $2)
  AND ($3::timestamptz IS NULL OR "timestamp" <= $3)
  AND ($4::text IS NULL OR embedding_status = $4)
  AND ($5::timestamptz IS NULL OR ("timestamp" <= $5 AND ("timestamp" < $5 OR id < $6::uuid)))
ORDER BY "timestamp" DESC, id DESC
LIMIT $7;

-- merge_event_metadata --
-- Remove top-level keys $3 from the metadata of event $1, then merge $2 in; returns the event.
UPDATE events SET metadata = (metadata - $3::text[]) || $2::jsonb WHERE id = $1
RETURNING id, "timestamp", content, metadata, embedding_model, embedding_status,
          embedding_error, job_id, created_at, embedding IS NOT NULL AS has_embedding;

-- delete_event --
-- Delete event $1; returns its job and whether it was still waiting for its embedding.
DELETE FROM events WHERE id = $1 RETURNING job_id, embedding_status;

-- events_to_embed --
-- The current rows behind a batch of event ids ($1), with their job's status.
SELECT e.id::text AS id, e.content, e.embedding_status, e.job_id, j.status AS job_status
FROM events e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.id = ANY($1::uuid[]);

-- store_event_embeddings --
-- Write vectors ($1 ids, $2 vectors, $3 model) for events still pending; returns what moved.
UPDATE events e
SET embedding = u.embedding, embedding_model = $3, embedding_status = 'done',
    embedding_error = NULL
FROM unnest($1::uuid[], $2::vector[]) AS u(id, embedding)
WHERE e.id = u.id AND e.embedding_status = 'pending'
RETURNING e.id::text AS id, e.job_id;

-- settle_events --
-- Move pending events ($1 ids) to status $2 ('skipped' | 'failed' | 'cancelled') with error $3;
-- returns what moved.
UPDATE events SET embedding_status = $2, embedding_error = $3
WHERE id = ANY($1::uuid[]) AND embedding_status = 'pending'
RETURNING id::text AS id, job_id;

-- requeue_events --
-- Put failed or cancelled events ($1 ids) of job $2 back to pending; returns their ids.
UPDATE events SET embedding_status = 'pending', embedding_error = NULL
WHERE id = ANY($1::uuid[]) AND job_id = $2 AND embedding_status IN ('failed', 'cancelled')
RETURNING id::text AS id;

-- cancelled_events_of_job --
-- The cancelled events of job $1.
SELECT id FROM events WHERE job_id = $1 AND embedding_status = 'cancelled';

-- search_events --
-- Nearest events to vector $1 by cosine, made by model $2, filtered by metadata containment $3,
-- time range [$4, $5]; $6 results. While the table is smaller than $7 bytes every candidate
-- is compared (the first branch: its ORDER BY is not the index's): HNSW misses neighbours on
-- small, skewed data (a few distinct events, then thousands of near-identical ones), where
-- an exact scan costs milliseconds (9 ms for 9,000 events on 2 cores). Only one branch
-- runs: the other's one-time filter is false (run it without parallel workers, which a
-- Gather would start all the same: events.search). The size is the table's files, always
-- current, where the statistics' row counts lag, survive TRUNCATE and are lost in a crash.
WITH small AS (SELECT pg_relation_size('events') < $7 AS yes)
(SELECT id, "timestamp", content, metadata, embedding_model, embedding_status, job_id,
        created_at, 1 - (embedding <=> $1) AS score
 FROM events
 WHERE (SELECT yes FROM small)
   AND embedding IS NOT NULL
   AND embedding_model = $2
   AND ($3::jsonb IS NULL OR metadata @> $3::jsonb)
   AND ($4::timestamptz IS NULL OR "timestamp" >= $4)
   AND ($5::timestamptz IS NULL OR "timestamp" <= $5)
 ORDER BY score DESC
 LIMIT $6)
UNION ALL
(SELECT id, "timestamp", content, metadata, embedding_model, embedding_status, job_id,
        created_at, 1 - (embedding <=> $1) AS score
 FROM events
 WHERE NOT (SELECT yes FROM small)
   AND embedding IS NOT NULL
   AND embedding_model = $2
   AND ($3::jsonb IS NULL OR metadata @> $3::jsonb)
   AND ($4::timestamptz IS NULL OR "timestamp" >= $4)
   AND ($5::timestamptz IS NULL OR "timestamp" <= $5)
 ORDER BY embedding <=> $1
 LIMIT $6);

-- ========================= idempotency keys =========================

-- claim_idempotency_key --
-- Claim key $2 of route $1 for a request of fingerprint $3; a key older than $4 seconds
-- counts as unused and is taken over. Returns a row iff the key is now this transaction's;
-- a key another transaction holds makes this wait until that one commits or rolls back.
INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (scope, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = NULL, response = NULL, created_at = now()
    WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)
RETURNING true AS claimed;

-- idempotent_answer --
-- The request fingerprint and the stored answer of key $2 of route $1.
SELECT fingerprint, status, response FROM idempotency_keys WHERE scope = $1 AND key = $2;

-- store_idempotent_answer --
-- Record the answer (status $3, body $4) of claimed key $2 of route $1.
UPDATE idempotency_keys SET status = $3, response = $4 WHERE scope = $1 AND key = $2;

-- purge_idempotency_keys --
-- Delete up to $2 keys older than $1 seconds, oldest first; returns how many went.
WITH gone AS (
    DELETE FROM idempotency_keys
    WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => $1)
        ORDER BY created_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED))
    RETURNING 1)
SELECT count(*)::int FROM gone;

-- ============================== queues ==============================

-- send_message --
-- Put one message ($2 jsonb) on queue $1; returns its id.
SELECT * FROM pgmq.send($1, $2::jsonb);

-- send_messages --
-- Put many messages ($2 jsonb[]) on queue $1; returns their ids.
SELECT * FROM pgmq.send_batch($1, $2::jsonb[]);

-- read_messages --
-- Take up to $3 messages from queue $1, invisible for $2 seconds.
SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.read($1, $2, $3);

-- read_messages_poll --
-- Like read_messages, waiting up to $4 seconds (polling every $5 ms) for the first message.
SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.read_with_poll($1, $2, $3, $4, $5);

-- delete_messages --
-- Acknowledge messages $2 of queue $1.
SELECT * FROM pgmq.delete($1, $2::bigint[]);

-- release_messages --
-- Make messages $2 of queue $1 visible again after $3 seconds.
SELECT msg_id FROM pgmq.set_vt($1, $2::bigint[], clock_timestamp() + make_interval(secs => $3));

-- queue_metrics --
-- Depth, visible count and ages of every queue.
SELECT queue_name, queue_length, queue_visible_length, newest_msg_age_sec, oldest_msg_age_sec,
       total_messages
FROM pgmq.metrics_all();

-- notify --
-- Wake listeners of channel $1 with payload $2.
SELECT pg_notify($1, $2);

-- ============================== queries =============================

-- ask_query_embedding --
-- Queue a query text for the embedder ($1 message) and wake it, in one statement.
SELECT pgmq.send('embed_query', $1::jsonb) AS msg_id, pg_notify('mnemo_embed_query', '');

-- answer_queries --
-- Answer query embeddings ($1 request ids, $2 vectors, NULL where $3 holds the error instead)
-- and wake each asker on its channel ($4 channels) with its request id; answers nobody took
-- within $5 seconds are dropped. Returns how many were answered.
WITH stale AS (
    DELETE FROM query_answers WHERE created_at < now() - make_interval(secs => $5)
), answered AS (
    INSERT INTO query_answers (rid, embedding, error)
    SELECT * FROM unnest($1::text[], $2::vector[], $3::text[])
    ON CONFLICT (rid) DO NOTHING
)
SELECT count(*) FROM (
    SELECT pg_notify(u.channel, u.rid) FROM unnest($4::text[], $1::text[]) AS u(channel, rid)
) AS woken;

-- take_query_answer --
-- Remove and return the answer to query embedding $1: its vector, or its error.
DELETE FROM query_answers WHERE rid = $1 RETURNING embedding, error;

-- ============================== workers =============================

-- register_worker --
-- Announce a worker ($1 id, $2 kind, $3 host, $4 pid, $5 version, $6 batch size).
INSERT INTO workers (id, kind, host, pid, version, batch_size)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET
    started_at = now(), last_heartbeat = now(), stopped_at = NULL,
    host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version;

-- beat --
-- Heartbeat of worker $1 with its counters since the last beat ($2 processed, $3 failed,
-- $4 current batch size).
UPDATE workers SET last_heartbeat = now(), processed = processed + $2, failed = failed + $3,
                   batch_size = $4
WHERE id = $1;

-- worker_stopped --
-- A worker ($1) stopped cleanly.
UPDATE workers SET stopped_at = now(), last_heartbeat = now() WHERE id = $1;

-- live_workers --
-- Workers of kind $1 (NULL for all) whose last heartbeat is younger than $2 seconds.
SELECT count(*)::int FROM workers
WHERE ($1::text IS NULL OR kind = $1) AND stopped_at IS NULL
  AND last_heartbeat > now() - make_interval(secs => $2);

-- worker_alive_on_host --
-- Does a worker of kind $1 on host $2 have a heartbeat younger than $3 seconds?
SELECT EXISTS (
    SELECT 1 FROM workers
    WHERE kind = $1 AND host = $2 AND stopped_at IS NULL
      AND last_heartbeat > now() - make_interval(secs => $3)
);

-- list_workers --
-- Every worker seen in the last $1 seconds, with whether it is alive ($2 seconds).
SELECT *, (stopped_at IS NULL AND last_heartbeat > now() - make_interval(secs => $2)) AS alive
FROM workers
WHERE last_heartbeat > now() - make_interval(secs => $1)
ORDER BY kind, started_at;

-- ============================== health ==============================

-- ping --
-- The database answers.
SELECT 1;

-- set_job_result --
-- Replace the result of job $1 with $2.
UPDATE jobs SET result = $2::jsonb, updated_at = now() WHERE id = $1;
