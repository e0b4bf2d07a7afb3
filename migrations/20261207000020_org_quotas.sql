-- Fair shares per organization (docs/configuration.md, Limits).
--
-- report_size: the bytes of a job's two report files (errors.csv and rows.csv), recorded by
-- the importer when it names the report; with file_size, what the job keeps in storage, and
-- so what counts against ORG_STORAGE_QUOTA_BYTES. Jobs finished before this column count
-- their upload only.
ALTER TABLE import_jobs ADD COLUMN report_size bigint NOT NULL DEFAULT 0 CHECK (report_size >= 0);

-- New jobs per organization in a fixed window (JOBS_CREATED_MAX_PER_ORG per
-- JOBS_CREATED_WINDOW_SECONDS): a counter of its own, so that deleting jobs does not give
-- the count back (an upload-then-cancel-then-delete loop is counted like any other).
CREATE TABLE org_job_windows (
    org_id            integer PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    window_started_at timestamptz NOT NULL,
    created           integer NOT NULL
);
