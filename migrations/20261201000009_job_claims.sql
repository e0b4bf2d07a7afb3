-- Issue 9: who may write a running job, and a stable code for job-level failures.
--
-- owner_id / lease_expires_at: the importer that claimed the job and until when its claim
-- holds without renewal. Every batch transaction checks the owner and renews the lease, so
-- two importers can never both write one job, whatever happens to their sessions (a
-- Postgres restart drops advisory locks, not rows). Cleared when the job ends.
ALTER TABLE import_jobs
    ADD COLUMN owner_id         uuid,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN error_code       text;

-- `cancelled`: asked for through the API or the ImportJob; the importer stops at a batch
-- boundary and the counters describe the committed batches.
ALTER TABLE import_jobs DROP CONSTRAINT import_jobs_status_check;
ALTER TABLE import_jobs ADD CONSTRAINT import_jobs_status_check
    CHECK (status IN ('uploading', 'pending', 'processing', 'done', 'failed', 'cancelled'));

-- The sweeper looks for stale reservations and unclaimed work.
CREATE INDEX import_jobs_sweep ON import_jobs (status, updated_at)
    WHERE status IN ('uploading', 'pending', 'processing');
