//! Streaming the object from its checkpoint through the loader: the dialect detected (or
//! stored), the reader task that builds batches, and the progress snapshots it publishes.

use crate::{
    batch::Batch,
    decode::ExpansionLimit,
    dialect,
    load::Loader,
    outcome::{db_stop, temporary, Stop},
    publish::Publisher,
    run_context::Ctx,
    source::{read_batches, SourceConfig, Start},
};
use bulk_import_core::{
    db,
    job::Totals,
    options::Dialect,
    progress::ProgressSnapshot,
    repo::{self},
    JobRow, JobStatus,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Detects the file's dialect from its first bytes (honouring the job's overrides) and
/// records it in the job row, so that every later attempt reads the file the same way. A
/// header without an email column fails the job (`missing_email_column`).
pub(crate) async fn detect_dialect(ctx: &Ctx<'_>, job: &JobRow) -> Result<Dialect, Stop> {
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
pub(crate) async fn stream(
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
pub(crate) fn spawn_reader(
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
pub(crate) async fn next_batch(
    rx: &mut mpsc::Receiver<Batch>,
    cancel: &CancellationToken,
) -> Result<Option<Batch>, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Interrupted),
        batch = rx.recv() => Ok(batch),
    }
}

pub(crate) fn progress(job: &JobRow, status: JobStatus, t: &Totals, size: i64) -> ProgressSnapshot {
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

pub(crate) fn snapshot(row: &JobRow) -> ProgressSnapshot {
    ProgressSnapshot {
        progress_percent: row.progress_percent(),
        ..progress(row, row.status(), &row.totals(), row.file_size)
    }
}
