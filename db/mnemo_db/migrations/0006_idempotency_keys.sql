-- Idempotency keys of the event writes (POST /v1/events and /v1/events/batch). A client
-- that sends its request again with the same `Idempotency-Key` header (a retry after a
-- dropped connection, whose first try may or may not have landed) gets the first answer
-- back instead of a second copy of its events. A key is claimed, and its answer stored,
-- in the transaction that stores the events: a key has an answer iff its events exist,
-- and a second request with the key waits on the first one's claim until it commits or
-- rolls back. Keys older than MNEMO_IDEMPOTENCY_TTL_S count as unused, and are deleted.
CREATE TABLE idempotency_keys (
    scope       text        NOT NULL,            -- the route: 'POST /v1/events'
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,            -- SHA-256 of the request as validated
    status      smallint,                        -- the answer; NULL only inside the claim
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
