//! The job repository: every statement on `import_jobs`, as named transitions of the job's
//! life. Nothing outside this module reads or writes the table.
//!
//! ```text
//!  reserve ──► uploading ──finish_upload──► pending ──claim──► processing ──finish──► done
//!                 │  ▲ heartbeat_upload                         │  ▲ renew, commit_batch
//!                 │  └ take_over_stale                          ├──fail──► failed ──retry──► pending
//!   release, expire_stale_uploads (row deleted)                 └──cancel─► cancelled
//! ```
//!
//! Each transition is one statement (or runs inside the caller's batch transaction) with its
//! guard: the status it starts from, the owner of the claim, the checkpoint. Queries are
//! checked at compile time against the migrations (`sqlx::query!`, offline data in `.sqlx/`,
//! regenerated and checked by `scripts/sqlx-prepare.sh`).
//!
//! Ownership: an importer `claim`s a job with its own id and a lease; every batch it commits
//! checks that it still owns the job and renews the lease in the same transaction, and so do
//! `renew` (its heartbeat) and `finish`. A claim is taken from another owner only when that
//! owner's lease has expired or when the caller knows it is dead (`Takeover::OwnerGone`: it
//! holds the job's advisory lock, which a live importer keeps for its whole run). A Postgres
//! restart drops advisory locks, never the row, so it cannot make two writers.

use crate::job::{ImportMode, JobError, JobRow, JobStatus, Totals};
use crate::options::ImportOptions;
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

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
                 dialect, checkpoint_stream_offset, columns
               FROM import_jobs "# + $tail
            $(, $arg)*
        )
    };
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// --- reads ------------------------------------------------------------------------------

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobRow>> {
    select_jobs!("WHERE id = $1", id).fetch_optional(db).await
}

/// A job as the members of its organization may see it: `uploading` reservations are
/// invisible, and another organization's job is indistinguishable from a missing one.
pub async fn get_visible(db: impl PgExecutor<'_>, id: Uuid, org_id: i32) -> Result<Option<JobRow>> {
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
) -> Result<(Vec<JobRow>, i64)> {
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
) -> Result<Option<JobRow>> {
    select_jobs!("WHERE user_id = $1 AND idempotency_key = $2", user_id, key)
        .fetch_optional(db)
        .await
}

/// Jobs that still have to run (`pending`, `processing`), oldest first.
pub async fn list_unfinished(db: impl PgExecutor<'_>) -> Result<Vec<JobRow>> {
    select_jobs!("WHERE status IN ('pending', 'processing') ORDER BY created_at")
        .fetch_all(db)
        .await
}

/// Jobs nobody runs: `pending` for longer than `age`, or `processing` under a claim whose
/// lease expired more than `age` ago (its importer died with no one to restart it).
pub async fn list_orphaned(db: impl PgExecutor<'_>, age: Duration) -> Result<Vec<JobRow>> {
    select_jobs!(
        "WHERE (status = 'pending' AND updated_at < now() - make_interval(secs => $1)) \
            OR (status = 'processing' AND (lease_expires_at IS NULL \
                OR lease_expires_at < now() - make_interval(secs => $1))) \
         ORDER BY created_at",
        secs(age)
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
) -> Result<Unfinished> {
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
pub async fn stored_bytes(db: impl PgExecutor<'_>, org_id: i32) -> Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(sum(file_size + report_size), 0)::bigint AS "bytes!"
           FROM import_jobs WHERE org_id = $1"#,
        org_id
    )
    .fetch_one(db)
    .await
}

/// Job counts by status (for `/metrics`).
pub async fn count_by_status(db: impl PgExecutor<'_>) -> Result<Vec<(JobStatus, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status: JobStatus", count(*) AS "n!" FROM import_jobs GROUP BY status"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

pub async fn totals(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Totals>> {
    sqlx::query_as!(
        Totals,
        "SELECT processed_rows, inserted_rows, updated_rows, error_rows, checkpoint_offset \
         FROM import_jobs WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

// --- upload (API) -----------------------------------------------------------------------

pub struct NewReservation<'a> {
    pub id: Uuid,
    pub org_id: i32,
    pub user_id: Uuid,
    pub idempotency_key: &'a str,
    pub mode: ImportMode,
    pub source_object: &'a str,
    pub options: &'a ImportOptions,
}

/// The options as their columns store them.
type OptionColumns<'a> = (
    bool,
    Option<i64>,
    Option<String>,
    Option<&'a str>,
    Option<String>,
);

fn option_columns(o: &ImportOptions) -> OptionColumns<'_> {
    (
        o.dry_run,
        o.max_errors,
        o.delimiter.map(|d| (d as char).to_string()),
        o.encoding.as_deref(),
        o.columns.as_ref().map(|c| c.to_json()),
    )
}

/// Reserves an Idempotency-Key for an upload (`uploading`); false when the key is taken.
pub async fn reserve(db: impl PgExecutor<'_>, r: &NewReservation<'_>) -> Result<bool> {
    let (dry_run, max_errors, delimiter, encoding, columns) = option_columns(r.options);
    let done = sqlx::query!(
        "INSERT INTO import_jobs (id, user_id, idempotency_key, request_fingerprint, mode, status, source_object, file_name, \
           dry_run, max_errors, delimiter, encoding, org_id, columns) \
         VALUES ($1, $2, $3, '', $4, 'uploading', $5, '', $6, $7, $8, $9, $10, $11) ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        r.id,
        r.user_id,
        r.idempotency_key,
        r.mode as ImportMode,
        r.source_object,
        dry_run,
        max_errors,
        delimiter,
        encoding,
        r.org_id,
        columns
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps an upload's reservation alive while its bytes arrive.
pub async fn heartbeat_upload(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE import_jobs SET updated_at = now() WHERE id = $1 AND status = 'uploading'",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes a reservation whose upload stopped heartbeating more than `age` ago, so that its
/// key can be used again; true when it was removed (the caller deletes its object).
pub async fn take_over_stale(db: impl PgExecutor<'_>, id: Uuid, age: Duration) -> Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM import_jobs WHERE id = $1 AND status = 'uploading' \
         AND updated_at < now() - make_interval(secs => $2)",
        id,
        secs(age)
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every reservation whose upload stopped heartbeating more than `age` ago, removed; returns
/// their object keys for the caller to delete.
pub async fn expire_stale_uploads(db: impl PgExecutor<'_>, age: Duration) -> Result<Vec<String>> {
    sqlx::query_scalar!(
        "DELETE FROM import_jobs WHERE status = 'uploading' \
         AND updated_at < now() - make_interval(secs => $1) RETURNING source_object",
        secs(age)
    )
    .fetch_all(db)
    .await
}

/// Gives an Idempotency-Key back after a failed upload; true when the reservation existed
/// (only then may its object be deleted).
pub async fn release(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM import_jobs WHERE id = $1 AND status = 'uploading'",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub struct UploadedFile<'a> {
    pub fingerprint: &'a str,
    pub file_name: &'a str,
    pub size: i64,
}

/// `uploading → pending`: the file is stored. `None` if the reservation is gone (taken over
/// as stale while this upload was slow).
pub async fn finish_upload(
    db: impl PgExecutor<'_> + Copy,
    id: Uuid,
    file: &UploadedFile<'_>,
) -> Result<Option<JobRow>> {
    let updated = sqlx::query!(
        "UPDATE import_jobs SET status = 'pending', request_fingerprint = $2, file_name = $3, \
           file_size = $4, updated_at = now() \
         WHERE id = $1 AND status = 'uploading'",
        id,
        file.fingerprint,
        file.file_name,
        file.size
    )
    .execute(db)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    get(db, id).await
}

pub struct NewJob<'a> {
    pub id: Uuid,
    pub org_id: i32,
    pub user_id: Uuid,
    pub idempotency_key: &'a str,
    pub fingerprint: &'a str,
    pub mode: ImportMode,
    pub source_object: &'a str,
    pub file_name: &'a str,
    pub file_size: i64,
    pub options: &'a ImportOptions,
}

/// A `pending` job for a file already stored (`bulk-import-importer submit`).
pub async fn create_pending(db: impl PgExecutor<'_>, j: &NewJob<'_>) -> Result<()> {
    let (dry_run, max_errors, delimiter, encoding, columns) = option_columns(j.options);
    sqlx::query!(
        "INSERT INTO import_jobs (id, user_id, idempotency_key, request_fingerprint, mode, status, \
           source_object, file_name, file_size, dry_run, max_errors, delimiter, encoding, org_id, columns) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        j.id,
        j.user_id,
        j.idempotency_key,
        j.fingerprint,
        j.mode as ImportMode,
        j.source_object,
        j.file_name,
        j.file_size,
        dry_run,
        max_errors,
        delimiter,
        encoding,
        j.org_id,
        columns
    )
    .execute(db)
    .await?;
    Ok(())
}

// --- running (importer) -----------------------------------------------------------------

/// Whether `claim` may take a job from another owner whose lease has not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// The caller does not hold the job's advisory lock: a live importer does, and will
    /// claim (or holds) the job; only one of ours or an owner whose lease expired is taken.
    IfExpired,
    /// The caller holds the job's advisory lock, which a live importer keeps for its whole
    /// run: any previous owner is dead, and a free job is the caller's.
    OwnerGone,
}

#[derive(Debug)]
pub enum Claim {
    /// `processing`, owned by the caller until its lease expires.
    Claimed(Box<JobRow>),
    /// Another importer holds a live claim: try later.
    Busy {
        owner: Uuid,
    },
    /// Still uploading: try later.
    NotReady,
    /// Ended before this run (done, failed or cancelled).
    Finished(JobStatus),
    NotFound,
}

/// `pending | processing → processing`, owned by `owner` for `lease`; counts an attempt.
pub async fn claim(
    db: &sqlx::PgPool,
    id: Uuid,
    owner: Uuid,
    lease: Duration,
    takeover: Takeover,
) -> Result<Claim> {
    let claimed = sqlx::query!(
        "UPDATE import_jobs SET status = 'processing', owner_id = $2, \
           lease_expires_at = now() + make_interval(secs => $3), \
           started_at = COALESCE(started_at, now()), attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'processing') \
           AND (owner_id = $2 OR $4 OR (owner_id IS NOT NULL AND lease_expires_at < now()))",
        id,
        owner,
        secs(lease),
        takeover == Takeover::OwnerGone
    )
    .execute(db)
    .await?;
    let job = get(db, id).await?;
    Ok(match job {
        None => Claim::NotFound,
        Some(job) if claimed.rows_affected() == 1 => Claim::Claimed(Box::new(job)),
        Some(job) => match job.status {
            JobStatus::Uploading => Claim::NotReady,
            JobStatus::Pending | JobStatus::Processing => Claim::Busy {
                owner: job.owner_id.unwrap_or_default(),
            },
            other => Claim::Finished(other),
        },
    })
}

/// The claim's heartbeat: extends the lease; false when the caller no longer owns a
/// running job (taken over, failed, cancelled).
pub async fn renew(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    lease: Duration,
) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET lease_expires_at = now() + make_interval(secs => $3) \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing'",
        id,
        owner,
        secs(lease)
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a claim up (the importer was interrupted): a successor need not wait for the lease.
pub async fn unclaim(db: impl PgExecutor<'_>, id: Uuid, owner: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE import_jobs SET owner_id = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing'",
        id,
        owner
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the stored object's real size (the file the importer will read).
pub async fn set_file_size(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    size: i64,
) -> Result<()> {
    sqlx::query!(
        "UPDATE import_jobs SET file_size = $3 WHERE id = $1 AND owner_id = $2",
        id,
        owner,
        size
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What one batch adds to the job, committed with its rows.
pub struct BatchCommit {
    pub owner: Uuid,
    pub lease: Duration,
    /// The checkpoint the batch starts from (where the committer left the job).
    pub from_offset: i64,
    pub to_offset: i64,
    pub to_line: i64,
    /// gzip uploads: the checkpoint in the decompressed stream.
    pub to_stream_offset: Option<i64>,
    pub processed: i64,
    pub inserted: i64,
    pub updated: i64,
    pub errors: i64,
}

/// Adds a batch's counters, moves the checkpoint and renews the lease, inside the batch's
/// own transaction — only if the caller still owns the running job and the checkpoint is
/// where it left it. `None` otherwise (the caller rolls back and finds out why).
pub async fn commit_batch(
    tx: &mut PgConnection,
    id: Uuid,
    b: &BatchCommit,
) -> Result<Option<Totals>> {
    sqlx::query_as!(
        Totals,
        "UPDATE import_jobs SET processed_rows = processed_rows + $2, inserted_rows = inserted_rows + $3, \
           updated_rows = updated_rows + $4, error_rows = error_rows + $5, checkpoint_offset = $6, \
           checkpoint_line = $7, lease_expires_at = now() + make_interval(secs => $10), \
           checkpoint_stream_offset = $11, updated_at = now() \
         WHERE id = $1 AND checkpoint_offset = $8 AND owner_id = $9 AND status = 'processing' \
         RETURNING processed_rows, inserted_rows, updated_rows, error_rows, checkpoint_offset",
        id,
        b.processed,
        b.inserted,
        b.updated,
        b.errors,
        b.to_offset,
        b.to_line,
        b.from_offset,
        b.owner,
        secs(b.lease),
        b.to_stream_offset
    )
    .fetch_optional(&mut *tx)
    .await
}

/// Where a running job stands, for an importer whose guarded write was refused.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub status: JobStatus,
    pub owner_id: Option<Uuid>,
    pub totals: Totals,
    pub file_size: i64,
}

pub async fn standing(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Standing>> {
    let row = sqlx::query!(
        r#"SELECT status AS "status: JobStatus", owner_id, file_size, processed_rows, inserted_rows,
             updated_rows, error_rows, checkpoint_offset
           FROM import_jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Standing {
        status: r.status,
        owner_id: r.owner_id,
        file_size: r.file_size,
        totals: Totals {
            processed_rows: r.processed_rows,
            inserted_rows: r.inserted_rows,
            updated_rows: r.updated_rows,
            error_rows: r.error_rows,
            checkpoint_offset: r.checkpoint_offset,
        },
    }))
}

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
) -> Result<Finish> {
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
pub async fn fail(db: impl PgExecutor<'_>, id: Uuid, error: &JobError) -> Result<bool> {
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
) -> Result<()> {
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
) -> Result<bool> {
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
pub async fn cancel(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
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
) -> Result<Option<Deleted>> {
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
pub async fn retry(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET status = 'pending', error_code = NULL, error = NULL, \
           finished_at = NULL, started_at = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'failed'",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
