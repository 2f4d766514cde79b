-- What each finished pass of a job wrote: [{ballista_job_id, written: [{partition, path, rows,
-- bytes}]}]. A job interrupted by a runner restart or a lost executor resumes after its last
-- finished pass.
ALTER TABLE jobs ADD COLUMN passes_json TEXT NOT NULL DEFAULT '[]';
