-- Operations: what workers report in their heartbeats beyond processed/failed, so one scrape
-- of any API instance sees the whole system, however many replicas run.
--
-- Histograms are stored as per-bucket counts (not cumulative), one array element per upper
-- bound listed in mnemo_core/workers.py, the last element for +Inf. Heartbeats add the
-- counts of the last interval element-wise; the API sums the rows of a kind.

ALTER TABLE workers
    ADD COLUMN batches           bigint NOT NULL DEFAULT 0,
    ADD COLUMN batch_items       bigint NOT NULL DEFAULT 0,
    ADD COLUMN busy_seconds      double precision NOT NULL DEFAULT 0,
    ADD COLUMN batch_hist        bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN item_seconds_hist bigint[] NOT NULL DEFAULT '{}';

-- Element-wise sum of two count arrays; the shorter one counts as zeros past its end.
CREATE FUNCTION mnemo_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}'::bigint[])
    FROM unnest(coalesce(a, '{}'::bigint[]), coalesce(b, '{}'::bigint[]))
         WITH ORDINALITY AS u(x, y, i)
$$;

-- The same as an aggregate: the histogram of every worker of a kind.
CREATE AGGREGATE mnemo_sum_counts(bigint[]) (
    SFUNC = mnemo_add_counts,
    STYPE = bigint[],
    INITCOND = '{}'
);
