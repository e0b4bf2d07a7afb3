//! Reads of `import_jobs`: one job, an organization's page of them, the unfinished and the
//! orphaned ones, counts and totals.

use crate::job::{ImportMode, JobRow, JobStatus, Totals};
use sqlx::PgExecutor;
use std::time::Duration;
use uuid::Uuid;

/// `SELECT <every column of JobRow> FROM import_jobs <tail>`, checked at compile time.
macro_rules! select_jobs {
    ($tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            JobRow,
            r#"SELECT id, org_id, user_id,
                 (SELECT u.email FROM users u WHERE u.id = import_jobs.user_id) AS created_by_email,
                 idempotency_key, request_fingerprint, mode AS "mode: ImportMode",
                 status AS "status: JobStatus", source_object, file_name, file_size, processed_rows,
                 inserted_rows, updated_rows, error_rows, checkpoint_offset, checkpoint_line,
                 report_object, error_code, error, attempts, owner_id, lease_expires_at, created_at,
                 started_at, finished_at, updated_at, dry_run, max_errors, delimiter, encoding,
                 dialect, checkpoint_stream_offset, columns, queue_position
               FROM import_jobs "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    select_jobs!("WHERE id = $1", id).fetch_optional(db).await
}

/// A job as the members of its organization may see it: `uploading` reservations are
/// invisible, and another organization's job is indistinguishable from a missing one.
pub async fn get_visible(
    db: impl PgExecutor<'_>,
    id: Uuid,
    org_id: i32,
) -> sqlx::Result<Option<JobRow>> {
    select_jobs!(
        "WHERE id = $1 AND org_id = $2 AND status <> 'uploading'",
        id,
        org_id
    )
    .fetch_optional(db)
    .await
}

/// An organization's visible jobs (only those `started_by` one user, if given), newest
/// first, and how many there are in all.
/// A page of an organization's jobs, newest first: all of them, or those `started_by` one
/// user, or with one public `status` (jobs still uploading are not listed); and how many
/// there are in all.
pub async fn list_visible(
    db: &sqlx::PgPool,
    org_id: i32,
    filter: &JobFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<JobRow>, i64)> {
    let status = filter.status.map(JobStatus::as_str);
    let jobs = select_jobs!(
        "WHERE org_id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND status <> 'uploading' \
         AND ($3::text IS NULL OR status = $3) \
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
        org_id,
        filter.started_by,
        status,
        limit,
        offset
    )
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM import_jobs
           WHERE org_id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND status <> 'uploading'
             AND ($3::text IS NULL OR status = $3)"#,
        org_id,
        filter.started_by,
        status
    )
    .fetch_one(db)
    .await?;
    Ok((jobs, total))
}

/// Which of an organization's jobs a list shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobFilter {
    /// Only the jobs this user started.
    pub started_by: Option<Uuid>,
    /// Only the jobs with this status.
    pub status: Option<JobStatus>,
}

pub async fn find_by_key(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<JobRow>> {
    select_jobs!("WHERE user_id = $1 AND idempotency_key = $2", user_id, key)
        .fetch_optional(db)
        .await
}

/// Jobs that still have to run (`pending`, `processing`), oldest first.
pub async fn list_unfinished(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<JobRow>> {
    select_jobs!("WHERE status IN ('pending', 'processing') ORDER BY created_at")
        .fetch_all(db)
        .await
}

/// Jobs nobody runs: `pending` for longer than `age`, or `processing` under a claim whose
/// lease expired more than `age` ago (its importer died with no one to restart it).
pub async fn list_orphaned(db: impl PgExecutor<'_>, age: Duration) -> sqlx::Result<Vec<JobRow>> {
    select_jobs!(
        "WHERE (status = 'pending' AND updated_at < now() - make_interval(secs => $1)) \
            OR (status = 'processing' AND (lease_expires_at IS NULL \
                OR lease_expires_at < now() - make_interval(secs => $1))) \
         ORDER BY created_at",
        age.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// A user's and their organization's unfinished jobs (uploading, pending, processing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    pub user: i64,
    pub org: i64,
    /// `key` is already one of the user's (a replay, which the quotas let through).
    pub replay: bool,
}

/// How many of a user's and of their organization's jobs are not finished, and whether `key`
/// is already one of the user's.
pub async fn unfinished_of(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    org_id: i32,
    key: &str,
) -> sqlx::Result<Unfinished> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE user_id = $1 AND status IN ('uploading', 'pending', 'processing')) AS "user!",
                count(*) FILTER (WHERE org_id = $2 AND status IN ('uploading', 'pending', 'processing')) AS "org!",
                coalesce(bool_or(user_id = $1 AND idempotency_key = $3), false) AS "replay!"
           FROM import_jobs WHERE user_id = $1 OR org_id = $2"#,
        user_id,
        org_id,
        key
    )
    .fetch_one(db)
    .await?;
    Ok(Unfinished {
        user: row.user,
        org: row.org,
        replay: row.replay,
    })
}

/// The bytes an organization keeps in storage: the uploads and reports of its jobs that are
/// not deleted (uploads still arriving count from when they are stored).
pub async fn stored_bytes(db: impl PgExecutor<'_>, org_id: i32) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(sum(file_size + report_size), 0)::bigint AS "bytes!"
           FROM import_jobs WHERE org_id = $1"#,
        org_id
    )
    .fetch_one(db)
    .await
}

/// Job counts by status (for `/metrics`).
pub async fn count_by_status(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(JobStatus, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status: JobStatus", count(*) AS "n!" FROM import_jobs GROUP BY status"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

pub async fn totals(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Totals>> {
    sqlx::query_as!(
        Totals,
        "SELECT processed_rows, inserted_rows, updated_rows, error_rows, checkpoint_offset \
         FROM import_jobs WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
}
