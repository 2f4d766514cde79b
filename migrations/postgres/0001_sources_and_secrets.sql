-- Secrets are sealed (AES-256-GCM under the cluster key, bound to their id); timestamps are
-- ISO-8601 UTC text in both backends so one query layer reads both.
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    alias TEXT NOT NULL UNIQUE,
    -- the URI without its password, which lives in secret_id
    uri TEXT NOT NULL,
    source_type TEXT NOT NULL CHECK (source_type IN ('postgres', 'csv', 'parquet')),
    secret_id TEXT REFERENCES secrets (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
