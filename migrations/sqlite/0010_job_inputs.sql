-- What a reconciliation run was given and read: its recipe's parameter values and, per source,
-- the location it read with them in place (no password): {"params": {…}, "sources": {…}}.
-- NULL for query jobs and for jobs from before parameters.
ALTER TABLE jobs ADD COLUMN inputs_json TEXT;
