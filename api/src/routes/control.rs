//! Control over a job: `POST /imports/{id}/cancel`, `POST /imports/{id}/retry` and
//! `DELETE /imports/{id}`. Each works on the caller's own jobs (404 otherwise, as everywhere)
//! through the job repository's guarded transitions.
//!
//! - Cancel moves a `pending` or `processing` job to `cancelled`. A running importer finds
//!   out at its next batch boundary — its guarded batch commit is refused, the batch in
//!   flight rolls back — and stops: the counters are exactly those of the committed batches,
//!   whose rows stay. This goes through the database, so it works with either executor;
//!   with `EXECUTOR=kubernetes` the ImportJob's `spec.cancelRequested` is set too, and the
//!   operator stops the Job at once.
//! - Retry moves a `failed` job back to `pending` and hands it to the executor; the importer
//!   resumes from the checkpoint (a new attempt). With `EXECUTOR=kubernetes` the executor
//!   raises the ImportJob's `spec.retries` and the operator runs it again as a new Job
//!   (`import-<id>-retry-<n>`); an ImportJob already deleted (its TTL) is created again.
//! - Delete removes a finished job: its row with its error rows (and a dry run's rows), its
//!   upload and its reports in storage. Customers stay. On Kubernetes the finished ImportJob
//!   is left to its TTL.

use crate::{
    access::visible_job,
    auth::AuthUser,
    error::{ApiError, ApiResult},
    state::AppState,
    view::JobView,
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, post},
    Json, Router,
};
use bulk_import_core::{
    job::{report_key, rows_report_key},
    repo, JobStatus,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/imports/{id}/cancel", post(cancel))
        .route("/imports/{id}/retry", post(retry))
        .route("/imports/{id}", delete(remove))
}

fn finished(status: JobStatus) -> ApiError {
    ApiError::conflict(
        "job_finished",
        format!("the import has already ended ({status})"),
    )
}

/// Stop a running or pending import at its next batch boundary.
#[utoipa::path(post, path = "/imports/{id}/cancel", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView, description = "cancelled: a running importer stops at its next batch boundary; committed batches stay and the counters describe them exactly"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the import has already ended (`job_finished`)")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = visible_job(&state, &user, &id).await?;
    if !repo::cancel(&state.pool, job.id).await? {
        let now = visible_job(&state, &user, &id).await?;
        return Err(finished(now.status));
    }
    tracing::info!(job_id = %job.id, "import cancelled");
    // Kubernetes: the ImportJob's cancelRequested, so the operator stops the Job now. The
    // cancelled row already stops the importer at its next batch boundary, so a failure here
    // only delays the Job's end (the operator also reads the row); it is logged.
    let (executor, job_id) = (state.executor.clone(), job.id);
    tokio::spawn(async move {
        if let Err(e) = executor.cancel(job_id).await {
            tracing::warn!(%job_id, error = format!("{e:#}"), "could not pass the cancel to the executor");
        }
    });
    let job = visible_job(&state, &user, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

/// Run a failed import again from its checkpoint.
#[utoipa::path(post, path = "/imports/{id}/retry", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView, description = "pending again; it resumes from its checkpoint as a new attempt"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the import is not `failed` (`not_failed`)")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = visible_job(&state, &user, &id).await?;
    if job.status != JobStatus::Failed {
        return Err(ApiError::conflict(
            "not_failed",
            format!(
                "only a failed import can be retried; this one is {}",
                job.status.public()
            ),
        ));
    }
    if !repo::retry(&state.pool, job.id).await? {
        let now = visible_job(&state, &user, &id).await?;
        return Err(ApiError::conflict(
            "not_failed",
            format!(
                "only a failed import can be retried; this one is {}",
                now.status.public()
            ),
        ));
    }
    tracing::info!(job_id = %job.id, "import retried");
    let executor = state.executor.clone();
    let job_id = job.id;
    // As after an upload: if this fails, the job stays pending and the sweeper hands it over.
    tokio::spawn(async move {
        if let Err(e) = executor.submit(job_id).await {
            tracing::error!(%job_id, error = format!("{e:#}"), "could not hand the job to the executor");
        }
    });
    let job = visible_job(&state, &user, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

/// Delete a finished import: its upload, its reports and its error rows (customers stay).
#[utoipa::path(delete, path = "/imports/{id}", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted: the job, its error rows, its upload and reports; customers stay"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the import has not ended (`job_unfinished`); cancel it first")),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let job = visible_job(&state, &user, &id).await?;
    let Some(gone) = repo::delete_finished(&state.pool, job.id, user.org).await? else {
        return Err(ApiError::conflict(
            "job_unfinished",
            "the import has not ended; cancel it first",
        ));
    };
    // The row is gone first, so nothing can hand these objects out any more; a storage
    // failure here leaves an orphan object, never a job pointing at a missing one.
    // Both report keys by name, whatever the row said: a cancelled job's importer may have
    // written them without naming them (it removes them itself once it sees the job gone).
    // The source only when it is the service's own upload: an object imported from the
    // organization's import prefixes is not the service's, and stays.
    let owned = bulk_import_core::job::is_upload_key_of(job.id, &gone.source_object);
    let mut keys: Vec<String> = owned.then_some(gone.source_object).into_iter().collect();
    keys.extend([report_key(job.id), rows_report_key(job.id)]);
    keys.extend(gone.report_object.filter(|k| *k != report_key(job.id)));
    for key in keys {
        if let Err(e) = state.storage.delete(&key).await {
            tracing::error!(job_id = %job.id, error = %e, "could not delete an object of a deleted import");
        }
    }
    tracing::info!(job_id = %job.id, "import deleted");
    Ok(StatusCode::NO_CONTENT)
}
