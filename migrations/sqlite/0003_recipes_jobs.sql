-- Reconciliation recipes and jobs (recon runs and large queries). Ids are prefixed nanoid text
-- (`rcp_…`, `job_…`); timestamps ISO-8601 UTC text, as in 0001.
CREATE TABLE recipes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- the recipe as submitted: {name, left, right, rules}
    body_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    job_type TEXT NOT NULL CHECK (job_type IN ('recon', 'query')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- not a foreign key: a job outlives the recipe it ran
    recipe_id TEXT,
    -- what runs: the recipe (a copy, as it was when submitted) or the SQL
    spec_json TEXT NOT NULL,
    callback_url TEXT,
    -- what the job is doing now (e.g. "classifying"), and the Ballista jobs it submitted
    phase TEXT,
    ballista_job_ids TEXT NOT NULL DEFAULT '',
    -- times a runner started it; a job restarted after a runner crash has more than one
    attempts INTEGER NOT NULL DEFAULT 0,
    counts_json TEXT,
    result_url TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
CREATE INDEX jobs_by_time ON jobs (created_at);
