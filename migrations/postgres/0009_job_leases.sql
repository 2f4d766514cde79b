-- Jobs held by a runner under a lease, so several runners can serve one metadata DB: the runner
-- that queued or took over a job renews `lease_until` while it holds it; a job whose lease has
-- passed (its runner died) is taken over by another runner with a compare-and-set on the lease.
-- Jobs left unfinished before leases existed have none, and are free to take.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
CREATE INDEX jobs_by_owner ON jobs (owner, status);
CREATE INDEX jobs_by_lease ON jobs (status, lease_until);
