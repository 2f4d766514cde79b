-- Named API tokens and the audit log. A token is stored only as the SHA-256 of its value (the
-- value is shown once, when it is made); `role` is viewer, operator or admin, each allowed what
-- the one before it is and more. Revoking keeps the row, so the audit log still names it.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    value_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);

-- One row a change, results download or refused request: who (the token's name; NULL when no
-- token was valid), what (method, the route's template and the path it was called at), when and
-- how it ended. Never a body, a query string or a header.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    token_name TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    path TEXT NOT NULL,
    -- the id or name the request was about: a path parameter, or what a create made
    resource TEXT,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'refused'))
);
CREATE INDEX audit_log_by_time ON audit_log (at);
