//! Claiming a job for a run (`repo::claim` with a lease, retried while the database is
//! unreachable), the heartbeat that renews the lease, and giving the claim up.

use crate::{outcome::RunError, run_context::Ctx};
use bulk_import_core::{
    db,
    repo::{self, Claim, Takeover},
    JobRow, JobStatus,
};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What claiming a job ends with when it does not fail.
pub(crate) enum Acquired {
    /// The job, and the connection holding its advisory lock for the whole run.
    Claimed(Box<JobRow>, sqlx::PgConnection),
    /// Nothing to run: the job had ended before.
    AlreadyFinished(JobStatus),
}

/// Claims the job, waiting up to its lease (plus a margin) for a live owner to finish or
/// die. Returns the claimed job and the connection holding its advisory lock, or that the
/// job had already ended.
pub(crate) async fn acquire(ctx: &Ctx<'_>, job_id: Uuid) -> Result<Acquired, RunError> {
    let deadline = Instant::now() + ctx.settings.job_lease + Duration::from_secs(5);
    let mut lock: Option<sqlx::PgConnection> = None;
    loop {
        match try_claim(ctx, job_id, &mut lock).await {
            Ok(Claim::Claimed(job)) => {
                let lock = lock.expect("a claim attempt holds a lock connection");
                return Ok(Acquired::Claimed(job, lock));
            }
            Ok(Claim::Finished(status)) => return Ok(Acquired::AlreadyFinished(status)),
            Ok(Claim::NotFound) => return Err(RunError::NotFound(job_id)),
            Ok(Claim::NotReady) => return Err(RunError::NotReady(job_id)),
            Ok(Claim::Busy { owner }) => {
                if Instant::now() >= deadline {
                    return Err(RunError::Busy(job_id));
                }
                tracing::info!(%job_id, %owner, "another importer holds the job; waiting");
            }
            // The database restarting under the wait: reconnect, within the same deadline.
            Err(e) if db::is_transient(&e) && Instant::now() < deadline => {
                tracing::warn!(%job_id, error = %e, "claiming the job failed; retrying");
                lock = None;
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One attempt at the claim: takes the job's advisory lock if it is free (then the previous
/// owner, if any, is dead and its claim can be taken over at once), then the claim.
pub(crate) async fn try_claim(
    ctx: &Ctx<'_>,
    job_id: Uuid,
    lock: &mut Option<sqlx::PgConnection>,
) -> Result<Claim, sqlx::Error> {
    use sqlx::Connection;
    if lock.is_none() {
        let conn = db::with_timeout(
            ctx.op_timeout,
            sqlx::PgConnection::connect_with(&ctx.options),
        )
        .await?;
        *lock = Some(conn);
    }
    let conn = lock.as_mut().expect("connected above");
    let locked: bool = db::with_timeout(
        ctx.op_timeout,
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(job_id.to_string())
            .fetch_one(conn),
    )
    .await?;
    let takeover = if locked {
        Takeover::OwnerGone
    } else {
        Takeover::IfExpired
    };
    db::with_timeout(
        ctx.op_timeout,
        repo::claim(
            &ctx.pool,
            job_id,
            ctx.owner,
            ctx.settings.job_lease,
            takeover,
        ),
    )
    .await
}

/// Renews the claim every third of its lease while the run goes on. A failed renewal is only
/// logged: the batch commits check ownership themselves.
pub(crate) async fn heartbeat(pool: PgPool, job_id: Uuid, owner: Uuid, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match db::with_timeout(every, repo::renew(&pool, job_id, owner, lease)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%job_id, "the claim on the job is gone; stopping at the next batch");
                return;
            }
            Err(e) => tracing::warn!(%job_id, error = %e, "renewing the claim failed"),
        }
    }
}

pub(crate) async fn unclaim(ctx: &Ctx<'_>, job_id: Uuid) {
    let limit = Duration::from_secs(3);
    if let Err(e) = db::with_timeout(limit, repo::unclaim(&ctx.pool, job_id, ctx.owner)).await {
        tracing::warn!(%job_id, error = %e, "could not give the claim up; it expires with its lease");
    }
}
