-- When a job's result files were deleted (by hand, or by the retention sweep); the job's row,
-- its summary and the open items it left stay.
ALTER TABLE jobs ADD COLUMN results_deleted_at TEXT;
CREATE INDEX jobs_by_recipe ON jobs (recipe_id, created_at);
CREATE INDEX jobs_by_finish ON jobs (finished_at);
