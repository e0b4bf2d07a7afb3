//! The end of a run: finish the job (`done` only when the checkpoint is at the end of the file
//! and the counters add up), write the report, or record a failure met mid-file.

use crate::{
    load::dry_run,
    outcome::{db_stop, temporary, Stop},
    report::{self, ReportError},
    run_context::Ctx,
};
use bulk_import_core::{
    db,
    job::{report_key, rows_report_key, JobError, Totals},
    repo::{self, Finish},
    retry::{retry, Policy},
    storage::StorageError,
    JobRow, JobStatus,
};
use uuid::Uuid;

/// Every batch is committed: the report, then `done` (`repo::finish`, which says why not
/// when the checkpoint is short of the end or the job is no longer this importer's).
pub(crate) async fn finish(ctx: &Ctx<'_>, job: &JobRow, totals: Totals) -> Result<Finish, Stop> {
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
pub(crate) async fn still_ours(ctx: &Ctx<'_>, job_id: Uuid) -> Result<JobRow, Stop> {
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

pub(crate) fn too_many_errors(job: &JobRow, totals: &Totals) -> JobError {
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
pub(crate) async fn write_report(
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
pub(crate) async fn remove_orphaned_report(
    ctx: &Ctx<'_>,
    job_id: Uuid,
    standing: Option<&repo::Standing>,
) {
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
pub(crate) async fn fail_mid_file(
    ctx: &Ctx<'_>,
    job: &JobRow,
    totals: Totals,
    error: JobError,
) -> Stop {
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
pub(crate) async fn forget_dry_run(ctx: &Ctx<'_>, job_id: Uuid) {
    let forgot = db::with_timeout(ctx.op_timeout, dry_run::forget(&ctx.pool, job_id)).await;
    if let Err(e) = forgot {
        tracing::warn!(%job_id, error = %e, "could not delete the dry run's rows");
    }
}
