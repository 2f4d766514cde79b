-- Schedules: a stored recipe run by a 5-field cron expression in a time zone, or every fixed
-- interval, with the parameters each run gives (which may name the tick's date).
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- not a foreign key: a tick of a schedule whose recipe was deleted records why it made no job
    recipe_id TEXT NOT NULL,
    -- exactly one of cron and every_secs
    cron TEXT,
    every_secs INTEGER,
    timezone TEXT NOT NULL,
    params_json TEXT NOT NULL,
    callback_url TEXT,
    paused INTEGER NOT NULL DEFAULT 0,
    -- ticks before this are not run: the creation, or the last resume after a pause
    ticks_from TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Each tick a runner handled: the job it made (whose id is derived from the schedule and the tick,
-- so runners racing for one tick make one job), how many earlier ticks it stands for (missed while
-- no runner was up), or why it made no job.
CREATE TABLE schedule_ticks (
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    tick_at TEXT NOT NULL,
    job_id TEXT,
    missed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (schedule_id, tick_at)
);
