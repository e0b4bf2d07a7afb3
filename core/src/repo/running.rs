//! The importer's transitions while it runs: claim with a lease, renew, unclaim, the batch
//! commit that checks ownership and moves the checkpoint, the standing of a job.

use super::reads::get;
use crate::job::{JobRow, JobStatus, Totals};
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use uuid::Uuid;

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
) -> sqlx::Result<Claim> {
    let claimed = sqlx::query!(
        "UPDATE import_jobs SET status = 'processing', owner_id = $2, \
           lease_expires_at = now() + make_interval(secs => $3), \
           started_at = COALESCE(started_at, now()), attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'processing') \
           AND (owner_id = $2 OR $4 OR (owner_id IS NOT NULL AND lease_expires_at < now()))",
        id,
        owner,
        lease.as_secs_f64(),
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
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET lease_expires_at = now() + make_interval(secs => $3) \
         WHERE id = $1 AND owner_id = $2 AND status = 'processing'",
        id,
        owner,
        lease.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a claim up (the importer was interrupted): a successor need not wait for the lease.
pub async fn unclaim(db: impl PgExecutor<'_>, id: Uuid, owner: Uuid) -> sqlx::Result<()> {
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
) -> sqlx::Result<()> {
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
) -> sqlx::Result<Option<Totals>> {
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
        b.lease.as_secs_f64(),
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

pub async fn standing(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Standing>> {
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
