-- Issue 25: admission. A `pending` job waiting for an importer slot has its place in the
-- queue here (1 is next; NULL: not queued). The API shows such a job as `queued` with its
-- `queue_position`; the operator (or the local executor) writes it while the job waits
-- and clears it when the job is admitted.
ALTER TABLE import_jobs ADD COLUMN queue_position integer CHECK (queue_position > 0);
