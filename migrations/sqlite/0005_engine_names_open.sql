-- Sources and connections name the engine that reads them in `source_type`. Which engines exist
-- is for the runner's engine registry to say (it checks every registration), not for a CHECK
-- constraint: an engine added to Kalla must need no migration. SQLite cannot drop a constraint,
-- so both tables are rebuilt without it. Foreign keys cannot be switched off inside the
-- migration's transaction: dropping `connections` deletes the `tables` rows that reference it,
-- so they are kept aside and put back, the check of their reference deferred to the commit.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE tables_kept AS SELECT * FROM tables;

CREATE TABLE sources_rebuilt (
    id TEXT PRIMARY KEY,
    alias TEXT NOT NULL UNIQUE,
    -- the URI without its password, which lives in secret_id
    uri TEXT NOT NULL,
    -- the engine's name (postgres, csv, parquet, …)
    source_type TEXT NOT NULL,
    secret_id TEXT REFERENCES secrets (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO sources_rebuilt (id, alias, uri, source_type, secret_id, created_at, updated_at)
    SELECT id, alias, uri, source_type, secret_id, created_at, updated_at FROM sources;
DROP TABLE sources;
ALTER TABLE sources_rebuilt RENAME TO sources;

CREATE TABLE connections_rebuilt (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- the engine's name; one that serves whole databases
    source_type TEXT NOT NULL,
    -- the settings without password or token fields, which live sealed in secret_id
    config_json TEXT NOT NULL,
    secret_id TEXT REFERENCES secrets (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO connections_rebuilt (id, name, source_type, config_json, secret_id, created_at, updated_at)
    SELECT id, name, source_type, config_json, secret_id, created_at, updated_at FROM connections;
DROP TABLE connections;
ALTER TABLE connections_rebuilt RENAME TO connections;

INSERT INTO tables SELECT * FROM tables_kept;
DROP TABLE tables_kept;
