-- Query embeddings for text search are answered through a table: the NOTIFY that wakes the
-- asking API instance carries only the request id. A NOTIFY payload holds at most 8,000
-- bytes, which a float32 vector in base64 fills at about 1,490 dimensions; float16 would
-- fit 2,000 but change the query vector itself. A row carries the exact vector of any
-- dimension, and an error of any length. The API takes (deletes) its row as it reads it;
-- the embedder drops answers nobody took when it writes new ones.
CREATE UNLOGGED TABLE query_answers (
    rid        text PRIMARY KEY,
    embedding  vector,
    error      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((embedding IS NULL) <> (error IS NULL))
);
-- Every row is deleted within seconds of its insert: vacuum after a fixed number of them.
ALTER TABLE query_answers SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);
