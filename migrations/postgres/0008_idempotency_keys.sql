-- Idempotency-Key of a POST that makes something (a job): the first request with a key claims it
-- with the SHA-256 of its route and body; once it has made its resource, the same key and body
-- get that resource again, another body a conflict. A claim whose request failed is removed, so
-- the key can be used again; keys are kept for a day.
CREATE TABLE idempotency_keys (
    route TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    -- NULL while the first request is being served
    resource_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (route, idempotency_key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);
