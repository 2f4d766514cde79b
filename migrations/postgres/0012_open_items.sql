-- Open items of carry_forward recipes: what a run left unmatched, one item per side and key,
-- carried into the recipe's next run until a run matches it or someone resolves it.
CREATE TABLE open_items (
    id TEXT PRIMARY KEY,
    -- not a foreign key: an item outlives a replaced recipe, and its history its deletion
    recipe_id TEXT NOT NULL,
    side TEXT NOT NULL,
    -- the first pass's key on that side, as a JSON array of text values (null for a null part)
    key_json TEXT NOT NULL,
    rows_seen BIGINT NOT NULL,
    -- open, matched (by closed_by_job), referred (closed_by_job decided it otherwise: duplicates,
    -- exceptions, ambiguous), resolved (by hand, with a note)
    state TEXT NOT NULL,
    -- run dates (YYYY-MM-DD), not wall time: ages count run days
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    runs_seen BIGINT NOT NULL,
    first_job TEXT NOT NULL,
    last_job TEXT NOT NULL,
    closed_by_job TEXT,
    closed_at TEXT,
    -- every event of the item, oldest first
    history_json TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX open_items_one_open_per_key ON open_items (recipe_id, side, key_json) WHERE state = 'open';
CREATE INDEX open_items_by_recipe ON open_items (recipe_id, state, id);

-- Per carry_forward recipe: the run whose open items the next run reads.
CREATE TABLE carried_forward (
    recipe_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    run_date TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Per run of a carry_forward recipe: whose open items it read (fixed at its first attempt, so a
-- retried or taken-over run reads the same ones, or fails if another run recorded since), and
-- when it recorded its own.
CREATE TABLE carry_runs (
    job_id TEXT PRIMARY KEY,
    recipe_id TEXT NOT NULL,
    read_job_id TEXT,
    recorded_at TEXT
);
