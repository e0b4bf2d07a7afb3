-- The imports an operator has taken from an ImportJob, per namespace and release. ImportJobs
-- carry no finalizer (deleting a namespace never waits for the operator or Postgres): when an
-- ImportJob is gone, whether the operator was running or not, its sweep finds the import here
-- with no ImportJob, fails an unfinished import (`importjob_deleted`), deletes its objects
-- with OBJECT_RETENTION=delete, and forgets it.
CREATE TABLE kube_import_jobs (
    job_id      uuid PRIMARY KEY REFERENCES import_jobs (id) ON DELETE CASCADE,
    namespace   text NOT NULL,
    -- The release (INSTANCE); '' without one.
    instance    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kube_import_jobs_by_release ON kube_import_jobs (namespace, instance);
