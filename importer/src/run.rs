//! One import from start to end: claim the job (`repo::claim`, with a lease renewed by a
//! heartbeat and by every batch), stream the object from its checkpoint through the loader,
//! write `errors.csv` from `import_errors`, and finish — `done` only when the checkpoint is at
//! the end of the file and the counters add up (`repo::finish`), otherwise resume.
//!
//! What stops a run and what follows (exit codes in `bulk_import_core::exit`):
//! - a job-level failure that another run would meet again (the file is gone): the job is
//!   `failed` with a stable code (`Outcome::Failed`, exit 2);
//! - anything temporary — the database or storage unreachable past the retries, another
//!   importer holding a live claim, the job still uploading, the report not writable —
//!   leaves the job as it is for a later run (`RunError`, exit 75): never a failed job;
//! - the job ended elsewhere (cancelled, failed by a deadline) or another importer took it
//!   over: this run stops at its next batch boundary without writing anything;
//! - SIGTERM: the batch in flight is finished or rolled back, the claim given up (exit 143).

use crate::{
    claim::{acquire, heartbeat, unclaim, Acquired},
    finish::{fail_mid_file, finish, still_ours, too_many_errors},
    outcome::{db_stop, storage_stop, Outcome, RunError, Stop, Temporary},
    publish::Publisher,
    run_context::{context, Ctx},
    stream::{detect_dialect, snapshot, stream},
};
use bulk_import_core::{
    db,
    job::{JobError, Totals},
    options::Dialect,
    repo::{self, Finish},
    retry::{retry, Policy},
    storage::StorageError,
    JobRow, JobStatus, Settings,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub async fn run_job(
    settings: &Settings,
    job_id: Uuid,
    cancel: CancellationToken,
) -> Result<Outcome, RunError> {
    let ctx = context(settings).await?;
    // Held for the whole run: a live importer keeps the job's advisory lock, so a successor
    // that gets it knows the previous owner is gone and need not wait for its lease.
    let (job, _lock) = match acquire(&ctx, job_id).await? {
        Acquired::Claimed(job, lock) => (*job, lock),
        Acquired::AlreadyFinished(status) => return Ok(Outcome::AlreadyFinished(status)),
    };
    tracing::info!(
        job_id = %job.id, mode = %job.mode(), offset = job.checkpoint_offset, attempt = job.attempts,
        owner = %ctx.owner, "import started"
    );
    let heartbeat = tokio::spawn(heartbeat(
        ctx.pool.clone(),
        job.id,
        ctx.owner,
        settings.job_lease,
    ));
    let publisher = Publisher::spawn(settings.redis_url());
    let result = process(&ctx, &job, &publisher, cancel).await;
    heartbeat.abort();
    let outcome = conclude(&ctx, &job, result).await;
    if let Ok(Some(row)) = db::with_timeout(ctx.op_timeout, repo::get(&ctx.pool, job.id)).await {
        publisher.publish(snapshot(&row));
    }
    publisher.finish().await;
    outcome
}

/// What the run's end means for the job and the exit: a failure is recorded in the job row,
/// a stop for now gives the claim up.
async fn conclude(
    ctx: &Ctx<'_>,
    job: &JobRow,
    result: Result<Totals, Stop>,
) -> Result<Outcome, RunError> {
    match result {
        Ok(totals) => {
            tracing::info!(job_id = %job.id, ?totals, "import done");
            Ok(Outcome::Done(totals))
        }
        Err(Stop::Interrupted) => {
            tracing::warn!(job_id = %job.id, "import interrupted; it resumes from its checkpoint");
            unclaim(ctx, job.id).await;
            Ok(Outcome::Interrupted)
        }
        Err(Stop::Regressed | Stop::TooManyErrors(_) | Stop::TooLarge(..)) => {
            unreachable!("process() handles these itself")
        }
        Err(Stop::Recorded(error)) => {
            error.log(job.id);
            Ok(Outcome::Failed(error))
        }
        Err(Stop::Ended(status)) => {
            tracing::warn!(job_id = %job.id, %status, "the job ended elsewhere; stopping");
            Ok(Outcome::Ended(status))
        }
        Err(Stop::Lost) => {
            tracing::warn!(job_id = %job.id, "another importer took the job over; stopping");
            Err(RunError::Busy(job.id))
        }
        Err(Stop::Failed(error)) => {
            error.log(job.id);
            retry(
                "recording the failure",
                Policy::MINUTE,
                db::is_transient,
                || repo::fail(&ctx.pool, job.id, &error),
            )
            .await?;
            Ok(Outcome::Failed(error))
        }
        Err(Stop::Temporary(reason)) => {
            tracing::error!(job_id = %job.id, %reason, "import stopped for now; a later run resumes it");
            unclaim(ctx, job.id).await;
            Err(RunError::Temporary(reason))
        }
    }
}

/// The import from the checkpoint to `done`: stream every batch, then the report and the
/// finish; a job that stops part-way by a rule of its own is failed here.
async fn process(
    ctx: &Ctx<'_>,
    job: &JobRow,
    publisher: &Publisher,
    cancel: CancellationToken,
) -> Result<Totals, Stop> {
    let (size, dialect) = prepare(ctx, job).await?;
    // A database crash can lose the last batches (asynchronous commits), and `finish` then
    // finds the checkpoint short of the end: start over from the checkpoint that survived, a
    // few times at most.
    let mut current = job.clone();
    let mut restarts = 0;
    loop {
        let finished = match stream(ctx, &current, &dialect, size, publisher, cancel.clone()).await
        {
            Ok(totals) => match finish(ctx, job, totals).await? {
                Finish::Done => return Ok(totals),
                other => other,
            },
            Err(Stop::Regressed) => Finish::Incomplete(Totals::default()),
            Err(Stop::TooManyErrors(totals)) => {
                let error = too_many_errors(job, &totals);
                return Err(fail_mid_file(ctx, job, totals, error).await);
            }
            Err(Stop::TooLarge(totals, limit)) => {
                let error = JobError::file_too_large(limit);
                return Err(fail_mid_file(ctx, job, totals, error).await);
            }
            Err(other) => return Err(other),
        };
        match finished {
            Finish::Done => unreachable!("returned above"),
            Finish::Incomplete(_) if restarts < 3 => {
                restarts += 1;
                tracing::warn!(job_id = %job.id, "batches were lost by the database; resuming from the stored checkpoint");
                current = still_ours(ctx, job.id).await?;
            }
            Finish::Incomplete(_) => return Err(Stop::Temporary(Temporary::BatchesLost)),
            Finish::Inconsistent(t) => {
                tracing::error!(job_id = %job.id, totals = ?t, "the job's counters do not add up");
                return Err(Stop::Failed(
                    JobError::internal().with_detail(format!("counters do not add up: {t:?}")),
                ));
            }
            Finish::NotOwner(Some(s)) if s.status != JobStatus::Processing => {
                return Err(Stop::Ended(s.status))
            }
            Finish::NotOwner(_) => return Err(Stop::Lost),
        }
    }
}

/// The object's size (recorded in the job row) and the file's dialect (detected once).
async fn prepare(ctx: &Ctx<'_>, job: &JobRow) -> Result<(u64, Dialect), Stop> {
    let size = retry(
        "reading the object size",
        Policy::MINUTE,
        StorageError::is_transient,
        || ctx.storage.size(&job.source_object),
    )
    .await
    .map_err(|e| storage_stop("reading the object size", e))?;
    if job.file_size != size as i64 {
        db::with_timeout(
            ctx.op_timeout,
            repo::set_file_size(&ctx.pool, job.id, ctx.owner, size as i64),
        )
        .await
        .map_err(|e| db_stop("recording the file size", e))?;
    }
    let dialect = match job.dialect() {
        Some(d) => d,
        None => detect_dialect(ctx, job).await?,
    };
    tracing::info!(job_id = %job.id, ?dialect, "dialect");
    Ok((size, dialect))
}
