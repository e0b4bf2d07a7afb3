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
    batch::Batch,
    decode::ExpansionLimit,
    dialect,
    load::{dry_run, LoadError, Loader},
    publish::Publisher,
    report::{self, ReportError},
    source::{read_batches, SourceConfig, Start},
};
use bulk_import_core::{
    db,
    job::{report_key, rows_report_key, JobError, Totals},
    options::Dialect,
    progress::ProgressSnapshot,
    repo::{self, Claim, Finish, Takeover},
    retry::{retry, Policy},
    storage::StorageError,
    JobRow, JobStatus, Settings, Storage,
};
use sqlx::{postgres::PgConnectOptions, PgPool};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done(Totals),
    /// The job had already ended (done, failed or cancelled) before this run.
    AlreadyFinished(JobStatus),
    /// The job ended elsewhere while this run was going (cancelled, failed by a deadline).
    Ended(JobStatus),
    /// A job-level failure, recorded in the job row.
    Failed(JobError),
    /// SIGTERM: the current batch was finished or rolled back; the checkpoint is consistent.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("job {0} does not exist")]
    NotFound(Uuid),
    #[error("job {0} is still being uploaded")]
    NotReady(Uuid),
    /// Another importer holds a live claim on the job (or took it over from this one).
    #[error("job {0} is being run by another importer")]
    Busy(Uuid),
    #[error("invalid configuration: {what}: {source}")]
    Config {
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// Postgres or storage could not be reached past retries, or the report could not be
    /// written: the job is left for a later run.
    #[error("temporarily unable to run the job: {0}")]
    Temporary(#[from] Temporary),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl RunError {
    /// Whether running the importer again later may succeed.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, RunError::NotFound(_) | RunError::Config { .. })
    }
}

/// The cause of a failure, kept as its source (never flattened to text).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a run stopped for now (exit 75): what it was doing, and why.
#[derive(Debug, thiserror::Error)]
pub enum Temporary {
    #[error("{what}: {source}")]
    Failed {
        what: &'static str,
        #[source]
        source: Cause,
    },
    #[error("the database kept losing committed batches")]
    BatchesLost,
}

fn temporary(what: &'static str, source: impl Into<Cause>) -> Stop {
    Stop::Temporary(Temporary::Failed {
        what,
        source: source.into(),
    })
}

/// What claiming a job ends with when it does not fail.
enum Acquired {
    /// The job, and the connection holding its advisory lock for the whole run.
    Claimed(Box<JobRow>, sqlx::PgConnection),
    /// Nothing to run: the job had ended before.
    AlreadyFinished(JobStatus),
}

/// Why a run stopped before `done`.
#[derive(Debug)]
enum Stop {
    Failed(JobError),
    Temporary(Temporary),
    Interrupted,
    /// The job is no longer ours: it ended elsewhere, or another importer took it over.
    Ended(JobStatus),
    Lost,
    /// Start over from the checkpoint stored in the job row.
    Regressed,
    /// More rows were bad than `max_errors` allows; the totals committed so far.
    TooManyErrors(Totals),
    /// A gzip file decompressed past its limit (in bytes); the totals committed so far.
    TooLarge(Totals, u64),
    /// A job-level failure already recorded in the job row (with its report).
    Recorded(JobError),
}

impl From<LoadError> for Stop {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Interrupted => Stop::Interrupted,
            LoadError::Regressed(_) => Stop::Regressed,
            LoadError::Ended(status) => Stop::Ended(status),
            LoadError::LostClaim => Stop::Lost,
            LoadError::TooManyErrors(totals) => Stop::TooManyErrors(totals),
            other => temporary("applying a batch", other),
        }
    }
}

/// Everything a run needs, fixed at its start.
struct Ctx<'a> {
    settings: &'a Settings,
    pool: PgPool,
    options: PgConnectOptions,
    storage: Storage,
    owner: Uuid,
    /// Client-side bound of one database operation (a batch, a statement).
    op_timeout: Duration,
}

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

/// The run's connections and storage client.
async fn context(settings: &Settings) -> Result<Ctx<'_>, RunError> {
    let options = db::connect_options(
        settings.database_url(),
        "bulk-import-importer",
        settings.db_statement_timeout,
    )
    .map_err(|e| RunError::Config {
        what: "DATABASE_URL",
        source: e.into(),
    })?;
    let storage = Storage::from_settings(settings).map_err(|e| RunError::Config {
        what: "storage",
        source: e.into(),
    })?;
    // Three: the two report uploads at once (`write_report`) leave one for the heartbeat.
    // The loader's two connections are its own.
    let pool = retry(
        "connecting to Postgres",
        Policy::MINUTE,
        db::is_transient,
        || db::pool_options(3).connect_with(options.clone()),
    )
    .await?;
    Ok(Ctx {
        settings,
        pool,
        options,
        storage,
        owner: Uuid::new_v4(),
        op_timeout: settings.db_statement_timeout + Duration::from_secs(10),
    })
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

/// Claims the job, waiting up to its lease (plus a margin) for a live owner to finish or
/// die. Returns the claimed job and the connection holding its advisory lock, or that the
/// job had already ended.
async fn acquire(ctx: &Ctx<'_>, job_id: Uuid) -> Result<Acquired, RunError> {
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
async fn try_claim(
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
async fn heartbeat(pool: PgPool, job_id: Uuid, owner: Uuid, lease: Duration) {
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

async fn unclaim(ctx: &Ctx<'_>, job_id: Uuid) {
    let limit = Duration::from_secs(3);
    if let Err(e) = db::with_timeout(limit, repo::unclaim(&ctx.pool, job_id, ctx.owner)).await {
        tracing::warn!(%job_id, error = %e, "could not give the claim up; it expires with its lease");
    }
}

fn storage_stop(what: &'static str, e: StorageError) -> Stop {
    match e {
        StorageError::NotFound(key) => {
            Stop::Failed(JobError::source_missing().with_detail(format!("object {key}")))
        }
        e if e.is_transient() => temporary(what, e),
        e => Stop::Failed(JobError::storage_unavailable().with_detail(format!("{what}: {e}"))),
    }
}

fn db_stop(what: &'static str, e: sqlx::Error) -> Stop {
    temporary(what, e)
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

/// Every batch is committed: the report, then `done` (`repo::finish`, which says why not
/// when the checkpoint is short of the end or the job is no longer this importer's).
async fn finish(ctx: &Ctx<'_>, job: &JobRow, totals: Totals) -> Result<Finish, Stop> {
    tracing::info!(job_id = %job.id, ?totals, "every batch is committed");
    let pause = ctx.settings.import.pause_before_finish;
    if !pause.is_zero() {
        tracing::info!(job_id = %job.id, ?pause, "pausing before the report and done");
        tokio::time::sleep(pause).await;
    }
    let report = write_report(ctx, job.id, totals).await?;
    let finished = retry(
        "finishing the job",
        Policy::MINUTE,
        db::is_transient,
        || {
            db::with_timeout(
                ctx.op_timeout,
                repo::finish(&ctx.pool, job.id, ctx.owner, report.as_ref()),
            )
        },
    )
    .await
    .map_err(|e| db_stop("finishing the job", e))?;
    if matches!(finished, Finish::Done) && job.dry_run {
        forget_dry_run(ctx, job.id).await;
    }
    if let (Finish::NotOwner(standing), Some(_)) = (&finished, &report) {
        remove_orphaned_report(ctx, job.id, standing.as_ref()).await;
    }
    Ok(finished)
}

/// The job row again, when it is still this importer's running job (after the database
/// lost batches: where to resume from).
async fn still_ours(ctx: &Ctx<'_>, job_id: Uuid) -> Result<JobRow, Stop> {
    let current = db::with_timeout(ctx.op_timeout, repo::get(&ctx.pool, job_id))
        .await
        .map_err(|e| db_stop("reading the job", e))?
        .ok_or(Stop::Ended(JobStatus::Failed))?;
    if current.status != JobStatus::Processing {
        return Err(Stop::Ended(current.status));
    }
    if current.owner_id != Some(ctx.owner) {
        return Err(Stop::Lost);
    }
    Ok(current)
}

fn too_many_errors(job: &JobRow, totals: &Totals) -> JobError {
    JobError::new(
        "too_many_errors",
        format!(
            "more than {} rows were bad ({} in the rows read so far); the batches committed before stay loaded",
            job.max_errors.unwrap_or_default(),
            totals.error_rows
        ),
    )
}

/// errors.csv, rebuilt from `import_errors` on every attempt (so a run that resumed after
/// every row was loaded still writes the whole report). Transient trouble (storage or the
/// database unreachable) is retried for about a minute; past that, or on a permanent error,
/// the run stops for now: the rows are loaded, a later run writes the report and finishes.
async fn write_report(
    ctx: &Ctx<'_>,
    job_id: Uuid,
    totals: Totals,
) -> Result<Option<repo::Report>, Stop> {
    if totals.error_rows == 0 {
        return Ok(None);
    }
    let key = report_key(job_id);
    let rows = rows_report_key(job_id);
    let (rows_size, report_size) = retry(
        "writing errors.csv",
        Policy::MINUTE,
        ReportError::is_transient,
        || async {
            // Both at once (each reads import_errors on a connection of its own); the job
            // row names errors.csv only once both are stored.
            tokio::try_join!(
                report::upload_rows(&ctx.pool, &ctx.storage, job_id, &rows),
                report::upload(&ctx.pool, &ctx.storage, job_id, &key, totals.error_rows),
            )
        },
    )
    .await
    .map_err(|e| temporary("writing errors.csv", e))?;
    Ok(Some(repo::Report {
        object: key,
        size: (rows_size + report_size) as i64,
    }))
}

/// The report just written belongs to a job that was cancelled or deleted meanwhile (its
/// `finish` was refused): nothing will ever name it — a cancelled job has no report, a
/// deleted one no row — and a deletion that ran while it was being written found nothing to
/// delete. Removed here, so that no report object outlives its job. A job another importer
/// took over (still `processing`) keeps the objects: that importer writes the same keys.
async fn remove_orphaned_report(ctx: &Ctx<'_>, job_id: Uuid, standing: Option<&repo::Standing>) {
    if standing.is_some_and(|s| s.status != JobStatus::Cancelled) {
        return;
    }
    for key in [report_key(job_id), rows_report_key(job_id)] {
        let removed = retry(
            "removing an orphaned report",
            Policy::BRIEF,
            StorageError::is_transient,
            || ctx.storage.delete(&key),
        )
        .await;
        match removed {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(%job_id, %key, error = %e, "could not remove the report of a cancelled or deleted job")
            }
        }
    }
    tracing::info!(%job_id, "the job was cancelled or deleted while its report was written; report removed");
}

/// The job stops part-way by a rule of its own (`max_errors` crossed: `too_many_errors`; a
/// gzip file past its expansion limit: `file_too_large`): the report of the errors so far,
/// then `failed`, by this owner. The committed batches stay. Returns why the run stops:
/// `Recorded` once the failure is in the job row, otherwise what kept it from being written.
async fn fail_mid_file(ctx: &Ctx<'_>, job: &JobRow, totals: Totals, error: JobError) -> Stop {
    let report = match write_report(ctx, job.id, totals).await {
        Ok(report) => report,
        Err(stop) => return stop,
    };
    let changed = retry(
        "recording the failure",
        Policy::MINUTE,
        db::is_transient,
        || {
            db::with_timeout(
                ctx.op_timeout,
                repo::fail_with_report(&ctx.pool, job.id, ctx.owner, &error, report.as_ref()),
            )
        },
    )
    .await;
    match changed {
        Err(e) => db_stop("recording the failure", e),
        Ok(false) => {
            if report.is_some() {
                let standing = db::with_timeout(ctx.op_timeout, repo::standing(&ctx.pool, job.id))
                    .await
                    .ok()
                    .flatten();
                remove_orphaned_report(ctx, job.id, standing.as_ref()).await;
            }
            Stop::Lost
        }
        Ok(true) => {
            if job.dry_run {
                forget_dry_run(ctx, job.id).await;
            }
            Stop::Recorded(error)
        }
    }
}

/// A dry run's bookkeeping, once the job has ended (left for the job's deletion if this
/// fails: it is only ever read by the same job).
async fn forget_dry_run(ctx: &Ctx<'_>, job_id: Uuid) {
    let forgot = db::with_timeout(ctx.op_timeout, dry_run::forget(&ctx.pool, job_id)).await;
    if let Err(e) = forgot {
        tracing::warn!(%job_id, error = %e, "could not delete the dry run's rows");
    }
}

/// Detects the file's dialect from its first bytes (honouring the job's overrides) and
/// records it in the job row, so that every later attempt reads the file the same way. A
/// header without an email column fails the job (`missing_email_column`).
async fn detect_dialect(ctx: &Ctx<'_>, job: &JobRow) -> Result<Dialect, Stop> {
    let (s, key) = (ctx.storage.clone(), job.source_object.clone());
    let handle = tokio::runtime::Handle::current();
    let (sample, whole, gzip) =
        tokio::task::spawn_blocking(move || crate::source::sample(handle, s, key))
            .await
            .map_err(|e| temporary("the reader stopped", e))?
            .map_err(|e| temporary("reading the file failed", e))?;
    let found = dialect::detect(&sample, whole, gzip, &job.options())
        .map_err(|e| Stop::Failed(e.job_error()))?;
    let json = serde_json::to_string(&found).expect("a dialect serialises");
    db::with_timeout(
        ctx.op_timeout,
        repo::set_dialect(&ctx.pool, job.id, ctx.owner, &json),
    )
    .await
    .map_err(|e| db_stop("recording the dialect", e))?;
    Ok(found)
}

/// Streams the object from the job's checkpoint to its end through the loader; returns the
/// committed totals.
async fn stream(
    ctx: &Ctx<'_>,
    job: &JobRow,
    dialect: &Dialect,
    size: u64,
    publisher: &Publisher,
    cancel: CancellationToken,
) -> Result<Totals, Stop> {
    let mut totals = job.totals();
    if job.max_errors.is_some_and(|max| totals.error_rows > max) {
        return Err(Stop::TooManyErrors(totals));
    }
    if job.checkpoint_offset as u64 >= size {
        return Ok(totals);
    }
    let settings = ctx.settings;
    let (tx, mut rx) = mpsc::channel(2);
    let reader = spawn_reader(ctx, job, dialect, size, tx);
    let mut loader = Loader::new(
        ctx.options.clone(),
        (job.id, job.org_id),
        job.mode(),
        job.checkpoint_offset,
        cancel.clone(),
    )
    .owned_by(ctx.owner, settings.job_lease, ctx.op_timeout)
    .stop_after_errors(job.max_errors)
    .store_errors_at_most(settings.import.max_stored_error_rows, totals.error_rows);
    loader.dry_run = job.dry_run;
    let mut published = totals.processed_rows;
    // The reader is well ahead of the database: the loader applies two batches at a time,
    // each committing right after the one before it (`Loader::push`).
    while let Some(batch) = next_batch(&mut rx, &cancel).await? {
        if let Some(committed) = loader.push(batch).await? {
            totals = committed;
            if totals.processed_rows - published >= settings.import.progress_every as i64 {
                published = totals.processed_rows;
                publisher.publish(progress(job, JobStatus::Processing, &totals, size as i64));
            }
        }
    }
    if let Some(last) = loader.flush().await? {
        totals = last;
    }
    match reader.await {
        Ok(Ok(())) => Ok(totals),
        Ok(Err(e)) => match e.get_ref().and_then(|e| e.downcast_ref::<ExpansionLimit>()) {
            Some(past) => Err(Stop::TooLarge(totals, past.limit)),
            // The reader retries storage itself; what is left is worth a later run, which
            // decides again (a missing object is a permanent failure there).
            None => Err(temporary("reading the file failed", e)),
        },
        Err(e) => Err(temporary("the reader stopped", e)),
    }
}

/// Starts the reading thread (`crate::source`) from the job's checkpoint; it sends batches
/// on `tx`.
fn spawn_reader(
    ctx: &Ctx<'_>,
    job: &JobRow,
    dialect: &Dialect,
    size: u64,
    tx: mpsc::Sender<Batch>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let settings = ctx.settings;
    let config = SourceConfig {
        batch_size: settings.import.batch_size,
        slow_per_row: settings.import.slow,
        mode: job.mode(),
        job_id: job.id,
        org_id: job.org_id,
        dialect: dialect.clone(),
        size,
        max_decompressed: settings.import.max_decompressed_bytes,
        max_ratio: settings.import.max_decompression_ratio,
    };
    let start = Start {
        offset: job.checkpoint_offset as u64,
        stream_offset: job.checkpoint_stream_offset.map(|o| o as u64),
        line: job.checkpoint_line as u64,
    };
    let (s, key) = (ctx.storage.clone(), job.source_object.clone());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || read_batches(handle, s, key, start, config, tx))
}

/// The reader's next batch (`None` at the end), or `Interrupted` once SIGTERM has come.
async fn next_batch(
    rx: &mut mpsc::Receiver<Batch>,
    cancel: &CancellationToken,
) -> Result<Option<Batch>, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Interrupted),
        batch = rx.recv() => Ok(batch),
    }
}

fn progress(job: &JobRow, status: JobStatus, t: &Totals, size: i64) -> ProgressSnapshot {
    ProgressSnapshot {
        job_id: job.id,
        status,
        processed_rows: t.processed_rows,
        inserted_rows: t.inserted_rows,
        updated_rows: t.updated_rows,
        error_rows: t.error_rows,
        bytes_read: t.checkpoint_offset,
        file_size: size,
        progress_percent: bulk_import_core::job::progress_percent(t.checkpoint_offset, size),
    }
}

fn snapshot(row: &JobRow) -> ProgressSnapshot {
    ProgressSnapshot {
        progress_percent: row.progress_percent(),
        ..progress(row, row.status(), &row.totals(), row.file_size)
    }
}
