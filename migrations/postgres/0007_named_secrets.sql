-- Named secrets, made and updated through the API (sources and connections refer to them by
-- name); a secret taken out of a registered URI keeps no name and lives as long as its records.
-- updated_at moves when the value is replaced or sealed again under a rotated secrets key.
ALTER TABLE secrets ADD COLUMN name TEXT;
ALTER TABLE secrets ADD COLUMN updated_at TEXT;
CREATE UNIQUE INDEX secrets_by_name ON secrets (name) WHERE name IS NOT NULL;
