//! One import from start to end: claim the job row, stream the object from its checkpoint
//! through the loader, write `errors.csv`, and record the final status (`done`, or `failed`
//! with a job-level reason).

use crate::{
    load::{Batch, LoadError, Loader, Totals},
    publish::Publisher,
    report,
    source::{read_batches, SourceConfig},
};
use bulk_import_core::{
    db,
    job::{fetch_job, report_key, JOB_COLUMNS},
    job_error::JobError,
    progress::ProgressSnapshot,
    storage::StorageError,
    Job, JobStatus, Settings, Storage,
};
use sqlx::{postgres::PgConnectOptions, PgPool};
use std::{future::Future, str::FromStr, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done(Totals),
    /// The job had already ended (done or failed) before this run: nothing to do.
    AlreadyFinished(JobStatus),
    /// A job-level failure, recorded in the job row.
    Failed(String),
    /// SIGTERM: the current batch was finished or rolled back; the checkpoint is consistent.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("job {0} does not exist")]
    NotFound(Uuid),
    #[error("job {0} is still being uploaded")]
    NotReady(Uuid),
    /// Another importer holds the job's lock (or its killed predecessor's session is still
    /// finishing its last commit) for longer than the wait.
    #[error("job {0} is being run by another importer")]
    Busy(Uuid),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Postgres could not be reached (or lost) past retries, so nothing could be recorded.
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl RunError {
    /// Whether running the importer again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            RunError::Database(_) | RunError::NotReady(_) | RunError::Busy(_)
        )
    }
}

/// Job-level failure inside a run.
enum Stop {
    /// Stored as a stable code and a safe message; the detail only goes to the log.
    Failed(JobError),
    Interrupted,
    Db(sqlx::Error),
    /// Start over from the checkpoint stored in the job row.
    Regressed,
}

impl From<LoadError> for Stop {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Interrupted => Stop::Interrupted,
            LoadError::Regressed(_) => Stop::Regressed,
            LoadError::Db(e) if db::is_transient(&e) => Stop::Db(e),
            LoadError::CheckpointMoved => Stop::Failed(JobError::conflict()),
            other => Stop::Failed(JobError::database_unavailable().with_detail(other)),
        }
    }
}

/// Retries `f` while it fails transiently, with exponential backoff, up to `attempts`.
async fn retry<T, E, F, Fut>(
    what: &str,
    attempts: u32,
    transient: impl Fn(&E) -> bool,
    mut f: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if transient(&e) && attempt + 1 < attempts => {
                attempt += 1;
                let delay = Duration::from_millis(250 * 2u64.pow(attempt.min(5)));
                tracing::warn!(error = %e, attempt, ?delay, "{what} failed, retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

pub async fn run_job(
    settings: &Settings,
    job_id: Uuid,
    cancel: CancellationToken,
) -> Result<Outcome, RunError> {
    let options = PgConnectOptions::from_str(settings.database_url())
        .map_err(|e| RunError::Config(format!("DATABASE_URL: {e}")))?
        .application_name("bulk-import-importer");
    let storage = Storage::from_settings(settings).map_err(|e| RunError::Config(e.to_string()))?;
    let pool = retry("connecting to Postgres", 8, db::is_transient, || {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
    })
    .await?;

    // Held for the whole run: one importer per job, and a successor waits until the session
    // of a killed predecessor has finished whatever commit it had already sent.
    let _lock = lock_job(&options, job_id).await?;
    let job = match claim(&pool, job_id).await? {
        Ok(job) => job,
        Err(outcome) => return outcome,
    };
    tracing::info!(
        job_id = %job.id, mode = %job.mode(), offset = job.checkpoint_offset, attempt = job.attempts,
        "import started"
    );
    let publisher = Publisher::spawn(settings.redis_url());
    let result = process(&pool, &storage, options, &job, settings, &publisher, cancel).await;
    let outcome = match result {
        Ok(totals) => {
            tracing::info!(job_id = %job.id, ?totals, "import done");
            Ok(Outcome::Done(totals))
        }
        Err(Stop::Interrupted) => {
            tracing::warn!(job_id = %job.id, "import interrupted; it resumes from its checkpoint");
            Ok(Outcome::Interrupted)
        }
        Err(Stop::Regressed) => unreachable!("process() resumes after regressions itself"),
        Err(Stop::Failed(failure)) => {
            failure.log(job.id);
            let reason = failure.stored();
            mark_failed(&pool, job.id, &reason).await?;
            Ok(Outcome::Failed(reason))
        }
        Err(Stop::Db(e)) => {
            let failure = JobError::database_unavailable().with_detail(&e);
            failure.log(job.id);
            let reason = failure.stored();
            match mark_failed(&pool, job.id, &reason).await {
                Ok(()) => Ok(Outcome::Failed(reason)),
                Err(_) => Err(RunError::Database(e)),
            }
        }
    };
    if let Ok(Some(row)) = fetch_job(&pool, job.id).await {
        publisher.publish(snapshot(&row));
    }
    publisher.finish().await;
    outcome
}

/// Takes the job's session-level advisory lock on a dedicated connection, waiting up to a
/// minute for a previous holder.
async fn lock_job(
    options: &PgConnectOptions,
    job_id: Uuid,
) -> Result<sqlx::PgConnection, RunError> {
    use sqlx::Connection;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut conn = sqlx::PgConnection::connect_with(options).await?;
    loop {
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(job_id.to_string())
                .fetch_one(&mut conn)
                .await?;
        if locked {
            return Ok(conn);
        }
        if std::time::Instant::now() >= deadline {
            return Err(RunError::Busy(job_id));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the job to `processing` (from `pending`, or again after a crash), or says why not.
async fn claim(
    pool: &PgPool,
    job_id: Uuid,
) -> Result<Result<Job, Result<Outcome, RunError>>, RunError> {
    let claimed = sqlx::query_as::<_, Job>(&format!(
        "UPDATE import_jobs SET status = 'processing', started_at = COALESCE(started_at, now()), \
           attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'processing') RETURNING {JOB_COLUMNS}"
    ))
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    if let Some(job) = claimed {
        return Ok(Ok(job));
    }
    Ok(Err(match fetch_job(pool, job_id).await? {
        None => Err(RunError::NotFound(job_id)),
        Some(j) if j.status() == JobStatus::Uploading => Err(RunError::NotReady(job_id)),
        Some(j) => Ok(Outcome::AlreadyFinished(j.status())),
    }))
}

fn storage_stop(e: StorageError) -> Stop {
    match e {
        StorageError::NotFound(key) => {
            Stop::Failed(JobError::source_missing().with_detail(format!("object {key}")))
        }
        other => Stop::Failed(JobError::storage_unavailable().with_detail(other)),
    }
}

async fn process(
    pool: &PgPool,
    storage: &Storage,
    options: PgConnectOptions,
    job: &Job,
    settings: &Settings,
    publisher: &Publisher,
    cancel: CancellationToken,
) -> Result<Totals, Stop> {
    let size = retry(
        "reading the object size",
        8,
        StorageError::is_transient,
        || storage.size(&job.source_object),
    )
    .await
    .map_err(storage_stop)?;
    if job.file_size != size as i64 {
        sqlx::query("UPDATE import_jobs SET file_size = $2 WHERE id = $1")
            .bind(job.id)
            .bind(size as i64)
            .execute(pool)
            .await
            .map_err(Stop::Db)?;
    }
    // A database crash can lose the last batches (asynchronous commits): start over from the
    // checkpoint that survived, a few times at most.
    let mut current = job.clone();
    let mut restarts = 0;
    let totals = loop {
        match stream(
            &current,
            size,
            storage,
            options.clone(),
            settings,
            publisher,
            cancel.clone(),
        )
        .await
        {
            Err(Stop::Regressed) if restarts < 3 => {
                restarts += 1;
                tracing::warn!(job_id = %job.id, "batches were lost by the database; resuming from the stored checkpoint");
                current = fetch_job(pool, job.id)
                    .await
                    .map_err(Stop::Db)?
                    .ok_or_else(|| {
                        Stop::Failed(JobError::conflict().with_detail("the job row disappeared"))
                    })?;
            }
            Err(Stop::Regressed) => {
                return Err(Stop::Failed(
                    JobError::database_unavailable()
                        .with_detail("the database kept losing batches"),
                ))
            }
            other => break other?,
        }
    };
    let report = if totals.error_rows > 0 {
        let key = report_key(job.id);
        retry(
            "writing errors.csv",
            6,
            |_| true,
            || report::upload(pool, storage, job.id, &key),
        )
        .await
        .map_err(|e| Stop::Failed(JobError::report_failed().with_detail(e)))?;
        Some(key)
    } else {
        None
    };
    let done = sqlx::query(
        "UPDATE import_jobs SET status = 'done', report_object = $2, finished_at = now(), updated_at = now() \
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(job.id)
    .bind(report)
    .execute(pool)
    .await
    .map_err(Stop::Db)?;
    if done.rows_affected() == 0 {
        return Err(Stop::Failed(JobError::conflict()));
    }
    Ok(totals)
}

/// Streams the object from the job's checkpoint to its end through the loader; returns the
/// committed totals.
async fn stream(
    job: &Job,
    size: u64,
    storage: &Storage,
    options: PgConnectOptions,
    settings: &Settings,
    publisher: &Publisher,
    cancel: CancellationToken,
) -> Result<Totals, Stop> {
    let mut totals = Totals {
        processed_rows: job.processed_rows,
        inserted_rows: job.inserted_rows,
        updated_rows: job.updated_rows,
        error_rows: job.error_rows,
        checkpoint_offset: job.checkpoint_offset,
    };
    let offset = job.checkpoint_offset as u64;
    if offset < size {
        let (tx, mut rx) = mpsc::channel(2);
        let config = SourceConfig {
            batch_size: settings.import.batch_size,
            slow_per_row: settings.import.slow,
            mode: job.mode(),
            job_id: job.id,
        };
        let (s, key, line) = (
            storage.clone(),
            job.source_object.clone(),
            job.checkpoint_line as u64,
        );
        let handle = tokio::runtime::Handle::current();
        let reader = tokio::task::spawn_blocking(move || {
            read_batches(handle, s, key, offset, line, config, tx)
        });
        // Sized from the bytes left at ~40 bytes per row.
        let mut loader = Loader::new(
            options,
            job.id,
            job.mode(),
            job.checkpoint_offset,
            (size - offset) / 40,
            cancel.clone(),
        );
        let mut published = totals.processed_rows;
        // A batch read but not applied yet (it shared an email with the one before it).
        let mut held = None;
        loop {
            let batch = match held.take() {
                Some(batch) => batch,
                None => match next_batch(&mut rx, &cancel).await? {
                    Some(batch) => batch,
                    None => break,
                },
            };
            // The reader is well ahead of the database: take the next batch too, if any, and
            // apply the two at the same time when they have no email in common; otherwise
            // apply this one alone and pair the next with the one after it.
            totals = match next_batch(&mut rx, &cancel).await? {
                Some(next) if !next.shares_with_previous() => {
                    loader.apply_pair(&batch, &next).await?
                }
                Some(next) => {
                    held = Some(next);
                    loader.apply(&batch).await?
                }
                None => loader.apply(&batch).await?,
            };
            if totals.processed_rows - published >= settings.import.progress_every as i64 {
                published = totals.processed_rows;
                publisher.publish(progress(job, JobStatus::Processing, &totals, size as i64));
            }
        }
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Stop::Failed(
                    JobError::storage_unavailable().with_detail(format!("reading the file: {e}")),
                ))
            }
            Err(e) => {
                return Err(Stop::Failed(
                    JobError::internal().with_detail(format!("the reader stopped: {e}")),
                ))
            }
        }
    }
    Ok(totals)
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

async fn mark_failed(pool: &PgPool, job_id: Uuid, reason: &str) -> Result<(), RunError> {
    retry("recording the failure", 4, db::is_transient, || {
        bulk_import_core::job::mark_failed(pool, job_id, reason)
    })
    .await?;
    Ok(())
}

fn progress(job: &Job, status: JobStatus, t: &Totals, size: i64) -> ProgressSnapshot {
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

fn snapshot(row: &Job) -> ProgressSnapshot {
    ProgressSnapshot {
        progress_percent: row.progress_percent(),
        ..progress(
            row,
            row.status(),
            &Totals {
                processed_rows: row.processed_rows,
                inserted_rows: row.inserted_rows,
                updated_rows: row.updated_rows,
                error_rows: row.error_rows,
                checkpoint_offset: row.checkpoint_offset,
            },
            row.file_size,
        )
    }
}
