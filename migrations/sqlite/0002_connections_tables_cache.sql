-- Connections (whole databases), their discovered tables with cache state, and cache versions
-- waiting to be deleted. Ids are prefixed nanoid text (`conn_…`, `tbl_…`, `del_…`); no integer id
-- exists. Timestamps are ISO-8601 UTC text, as in 0001.
CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source_type TEXT NOT NULL CHECK (source_type IN ('postgres')),
    -- the settings without password or token fields, which live sealed in secret_id
    config_json TEXT NOT NULL,
    secret_id TEXT REFERENCES secrets (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE tables (
    id TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    -- [{name, data_type, nullable, sql_type}]: the columns as Kalla reads them (Arrow types)
    arrow_schema_json TEXT NOT NULL,
    discovered_at TEXT NOT NULL,
    -- the cache version being served, if any
    cache_version TEXT,
    cache_url TEXT,
    last_sync TEXT,
    row_count BIGINT,
    -- a running refresh holds this lease; an expired lease (a crashed runner) may be taken over
    refresh_lease TEXT,
    refresh_lease_expires_at TEXT,
    UNIQUE (connection_id, schema_name, table_name)
);

CREATE TABLE pending_deletions (
    id TEXT PRIMARY KEY,
    -- a cache version directory (file:// or s3:// URL ending in /)
    url TEXT NOT NULL,
    reason TEXT NOT NULL,
    delete_after TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX pending_deletions_due ON pending_deletions (delete_after);
