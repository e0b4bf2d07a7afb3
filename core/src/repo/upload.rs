//! The upload's transitions (the API): reserve the key, heartbeat, take over or release a
//! stale upload, finish it into a `pending` job; a job created whole (`create_pending`).

use super::reads::get;
use crate::job::{ImportMode, JobRow};
use crate::options::ImportOptions;
use sqlx::PgExecutor;
use std::time::Duration;
use uuid::Uuid;

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
pub async fn reserve(db: impl PgExecutor<'_>, r: &NewReservation<'_>) -> sqlx::Result<bool> {
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
pub async fn heartbeat_upload(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
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
pub async fn take_over_stale(
    db: impl PgExecutor<'_>,
    id: Uuid,
    age: Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM import_jobs WHERE id = $1 AND status = 'uploading' \
         AND updated_at < now() - make_interval(secs => $2)",
        id,
        age.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every reservation whose upload stopped heartbeating more than `age` ago, removed; returns
/// their object keys for the caller to delete.
pub async fn expire_stale_uploads(
    db: impl PgExecutor<'_>,
    age: Duration,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "DELETE FROM import_jobs WHERE status = 'uploading' \
         AND updated_at < now() - make_interval(secs => $1) RETURNING source_object",
        age.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// Gives an Idempotency-Key back after a failed upload; true when the reservation existed
/// (only then may its object be deleted).
pub async fn release(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
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
) -> sqlx::Result<Option<JobRow>> {
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

/// A `pending` job for a file already stored (`bulk-import-importer submit`): an error when
/// its id or the user's Idempotency-Key is taken already.
pub async fn create_pending(db: impl PgExecutor<'_>, j: &NewJob<'_>) -> sqlx::Result<()> {
    if create_from_object(db, j).await? {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(format!(
            "job {} or the Idempotency-Key {:?} exists already",
            j.id, j.idempotency_key
        )))
    }
}

/// A `pending` job for an object already in storage (`POST /imports` with a JSON body, or a
/// hand-written ImportJob): false when the id or the user's Idempotency-Key is taken already.
pub async fn create_from_object(db: impl PgExecutor<'_>, j: &NewJob<'_>) -> sqlx::Result<bool> {
    let (dry_run, max_errors, delimiter, encoding, columns) = option_columns(j.options);
    let done = sqlx::query!(
        "INSERT INTO import_jobs (id, user_id, idempotency_key, request_fingerprint, mode, status, \
           source_object, file_name, file_size, dry_run, max_errors, delimiter, encoding, org_id, columns) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT DO NOTHING",
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
    Ok(done.rows_affected() == 1)
}
