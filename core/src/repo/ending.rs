//! How a job ends or starts again: finish, fail (with or without a report), cancel, delete a
//! finished job, retry a failed one; the dialect a run detected.

use super::running::{standing, Standing};
use crate::job::{JobError, JobStatus, Totals};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A job's report as stored: errors.csv's key and the bytes of both report files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub object: String,
    pub size: i64,
}

fn report_columns(report: Option<&Report>) -> (Option<&str>, i64) {
    report.map_or((None, 0), |r| (Some(r.object.as_str()), r.size))
}

#[derive(Debug)]
pub enum Finish {
    Done,
    /// The checkpoint is short of the end of the file (batches committed asynchronously were
    /// lost by a database crash): resume from it.
    Incomplete(Totals),
    /// processed ≠ inserted + updated + errors: a bug, never expected.
    Inconsistent(Totals),
    /// The caller no longer owns the running job.
    NotOwner(Option<Standing>),
}

/// `processing → done`, only when the checkpoint is at the end of the file and the counters
/// add up, in the same statement; clears the claim. A synchronous commit, so it also makes
/// every batch before it durable.
pub async fn finish(
    db: &sqlx::PgPool,
    id: Uuid,
    owner: Uuid,
    report: Option<&Report>,
) -> sqlx::Result<Finish> {
    let (report_object, report_size) = report_columns(report);
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'done', report_object = $3, report_size = $4, \
           finished_at = now(), updated_at = now(), owner_id = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing' \
           AND checkpoint_offset = file_size \
           AND processed_rows = inserted_rows + updated_rows + error_rows",
        id,
        owner,
        report_object,
        report_size
    )
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Finish::Done);
    }
    let now = standing(db, id).await?;
    Ok(match now {
        Some(s) if s.status == JobStatus::Processing && s.owner_id == Some(owner) => {
            let t = s.totals;
            if t.checkpoint_offset != s.file_size {
                Finish::Incomplete(t)
            } else {
                Finish::Inconsistent(t)
            }
        }
        other => Finish::NotOwner(other),
    })
}

/// `pending | processing → failed` with a stable code (`error_code`) and a safe message
/// (`error`, as `"<code>: <message>"`), whoever runs it (the executor's deadline, the
/// operator seeing a pod that can never run, the importer's own permanent failure). A job
/// that already ended keeps its outcome. True when it changed.
pub async fn fail(db: impl PgExecutor<'_>, id: Uuid, error: &JobError) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'failed', error_code = $2, error = $3, finished_at = now(), \
           updated_at = now(), owner_id = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND status IN ('pending', 'processing')",
        id,
        error.code,
        error.stored()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the dialect an importer detected (JSON, `crate::options::Dialect`) at the job's
/// first start, so that every later attempt reads the file the same way.
pub async fn set_dialect(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    dialect_json: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE import_jobs SET dialect = $3, updated_at = now() \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing'",
        id,
        owner,
        dialect_json
    )
    .execute(db)
    .await?;
    Ok(())
}

/// `processing → failed` for a job stopped by its own rule (`too_many_errors`), with the
/// report of the errors found so far; only by the owner. True when it changed.
pub async fn fail_with_report(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    error: &JobError,
    report: Option<&Report>,
) -> sqlx::Result<bool> {
    let (report_object, report_size) = report_columns(report);
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'failed', error_code = $3, error = $4, report_object = $5, \
           report_size = $6, finished_at = now(), updated_at = now(), owner_id = NULL, \
           lease_expires_at = NULL \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing'",
        id,
        owner,
        error.code,
        error.stored(),
        report_object,
        report_size
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `pending | processing → cancelled`. The importer sees it at its next batch boundary (its
/// guarded commit is refused) and stops; the counters stay those of the committed batches.
pub async fn cancel(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'cancelled', finished_at = now(), updated_at = now(), \
           owner_id = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND status IN ('pending', 'processing')",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a deleted job left in storage, for the caller to remove.
pub struct Deleted {
    pub source_object: String,
    pub report_object: Option<String>,
}

/// Deletes an organization's finished job (`done`, `failed`, `cancelled`) with its error
/// rows (in the same statement: `import_errors` has no foreign key, see its migration) and
/// dry run rows (the foreign key cascades); customers stay. `Ok(None)`: no such job of the
/// organization, or not finished (`get_visible` tells which).
pub async fn delete_finished(
    db: impl PgExecutor<'_>,
    id: Uuid,
    org_id: i32,
) -> sqlx::Result<Option<Deleted>> {
    let row = sqlx::query!(
        r#"WITH gone AS (
             DELETE FROM import_jobs WHERE id = $1 AND org_id = $2
               AND status IN ('done', 'failed', 'cancelled')
             RETURNING id, source_object, report_object),
           errors AS (DELETE FROM import_errors WHERE job_id IN (SELECT id FROM gone))
           SELECT source_object AS "source_object!", report_object FROM gone"#,
        id,
        org_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Deleted {
        source_object: r.source_object,
        report_object: r.report_object,
    }))
}

/// `failed → pending`: a failed job resumes from its checkpoint as a new attempt. Its
/// `started_at` is cleared, so the retry's first claim starts a fresh deadline
/// (`JOB_ACTIVE_DEADLINE_SECONDS` counts from it): a job failed `deadline_exceeded` would
/// otherwise fail again at once.
pub async fn retry(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'pending', error_code = NULL, error = NULL, \
           finished_at = NULL, started_at = NULL, queue_position = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'failed'",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
