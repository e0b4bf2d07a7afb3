//! The upload behind `POST /imports` (the route is `routes::imports`): the Idempotency-Key's
//! reservation, the quotas, the streamed file, the job it becomes.
//!
//! Idempotency: the first request with a key reserves it (a row in state `uploading`), then
//! streams the file to storage while hashing it. A request with the same key meanwhile gets
//! 409; afterwards it gets 200 and the same job when its file (SHA-256), mode and options
//! match, or 422 when they do not. A failed upload (too large, client gone, storage down, a
//! header that does not suit `columns=`) releases the key and leaves no object behind. A
//! reservation whose upload stopped heartbeating (the API died mid-upload) is taken over
//! after a minute.
//!
//! Fair shares (docs/configuration.md, Limits): every request that streams a file — a new
//! upload or a replay, which hashes the whole file — holds an upload slot ([`crate::quota`]);
//! a new key also needs room in the organization's storage quota (413
//! `storage_quota_exceeded`) and a place in its window of new jobs (429 `too_many_new_jobs`),
//! and the user and the organization must be under their unfinished-jobs caps.

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::query_params,
    job_quota::{admit_new_job, quota_exceeded, unfinished_jobs_quota},
    receive::{receive, too_large, upload_slot, Sink, Take},
    sniff,
    state::AppState,
    upload_limits::{LimitedMultipart, UploadLimits},
    upload_options::{import_options, parse_mode},
    view::JobView,
};
use axum::{
    extract::Multipart,
    http::{header, HeaderMap, StatusCode},
    Json,
};
use bulk_import_core::{
    job::{fingerprint, upload_key},
    options::ImportOptions,
    repo::{self, NewReservation, UploadedFile},
    ImportMode, JobRow, JobStatus,
};
use bulk_import_importer::dialect::SAMPLE_BYTES;
use std::time::Duration;
use uuid::Uuid;

const MAX_KEY_LEN: usize = 255;
/// An `uploading` reservation not refreshed for this long belongs to a dead upload: its key
/// is taken over by the next request with it, and the sweeper removes it with its object.
pub const STALE_UPLOAD: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(15);

#[tracing::instrument(skip_all, fields(user_id = %caller.id, org_id = caller.org))]
pub async fn create_job(
    state: AppState,
    caller: AuthUser,
    query: Option<String>,
    headers: HeaderMap,
    multipart: Result<LimitedMultipart, ApiError>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let params = query_params(query);
    let mode = parse_mode(&params)?;
    let options = import_options(&params)?;
    let key = idempotency_key(&headers)?;
    let declared = declared_size(&headers, state.settings.max_upload_bytes)?;
    let LimitedMultipart {
        mut multipart,
        limits,
    } = multipart?;
    let (user, org) = (caller.id, caller.org);
    unfinished_jobs_quota(&state, user, org, &key).await?;

    let job_id = Uuid::new_v4();
    let object = upload_key(user, job_id);
    let reservation = NewReservation {
        id: job_id,
        org_id: org,
        user_id: user,
        idempotency_key: &key,
        mode,
        source_object: &object,
        options: &options,
    };
    if let Some(existing) = reserve_or_find(&state, &reservation).await? {
        let asked = (mode, &options);
        return replay(&state, &caller, &existing, asked, &mut multipart, &limits).await;
    }
    // This request owns the key. Quotas (docs/configuration.md, Limits): an upload slot (per
    // user, per organization, per process, held until this request ends), then the
    // organization's stored bytes and new jobs per window.
    let admitted = match upload_slot(&state, user, org) {
        Ok(slot) => admit_new_job(&state, org, declared)
            .await
            .map(|room| (slot, room)),
        Err(e) => Err(e),
    };
    let Ok((_slot, room)) = admitted else {
        release(&state, job_id, &object).await;
        return Err(admitted.err().expect("refused"));
    };
    let job = upload(
        &state,
        job_id,
        &object,
        (mode, &options),
        &mut multipart,
        (&limits, room),
    )
    .await?;
    tracing::info!(%job_id, size = job.file_size, %mode, "import created");
    hand_over(&state, job_id).await;
    Ok((StatusCode::CREATED, Json(JobView::from(&job))))
}

/// The request's declared Content-Length, refused at once (413) when it is more than the
/// largest upload and its multipart framing.
fn declared_size(headers: &HeaderMap, limit: u64) -> ApiResult<Option<u64>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(64 * 1024)) {
        return Err(too_large(limit));
    }
    Ok(declared)
}

/// Hands a new job to the executor on its own task, so that a client hanging up now cannot
/// stop it (the answer still waits for it, so an ImportJob exists once the upload is
/// answered); if it fails, the job stays pending and the sweeper hands it over again.
pub(crate) async fn hand_over(state: &AppState, job_id: Uuid) {
    let executor = state.executor.clone();
    let submitted = tokio::spawn(async move {
        if let Err(e) = executor.submit(job_id).await {
            tracing::error!(%job_id, error = format!("{e:#}"), "could not hand the job to the executor");
        }
    });
    let _ = submitted.await;
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<String> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Err(ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header is required",
        )),
        Some(Err(_)) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be visible ASCII",
        )),
        Some(Ok(k)) if k.trim().is_empty() => Err(ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header must not be empty",
        )),
        Some(Ok(k)) if k.len() > MAX_KEY_LEN => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key is longer than 255 characters",
        )),
        Some(Ok(k)) => Ok(k.to_string()),
    }
}

/// Reserves the key for this request (`None`), or returns the job that already has it.
/// A reservation whose upload died (no heartbeat for `STALE_UPLOAD`) is taken over; one
/// still uploading is 409.
async fn reserve_or_find(
    state: &AppState,
    reservation: &NewReservation<'_>,
) -> ApiResult<Option<JobRow>> {
    loop {
        if repo::reserve(&state.pool, reservation).await? {
            return Ok(None);
        }
        let existing = repo::find_by_key(
            &state.pool,
            reservation.user_id,
            reservation.idempotency_key,
        )
        .await?;
        // Released between the two statements: try again.
        let Some(existing) = existing else { continue };
        if existing.status() != JobStatus::Uploading {
            return Ok(Some(existing));
        }
        if repo::take_over_stale(&state.pool, existing.id, STALE_UPLOAD).await? {
            let _ = state.storage.delete(&existing.source_object).await;
            continue;
        }
        return Err(ApiError::conflict(
            "upload_in_progress",
            "a request with this Idempotency-Key is still uploading; retry when it has finished",
        ));
    }
}

/// This request owns the key: streams the file to storage, keeping the reservation alive,
/// and turns the reservation into a `pending` job. Any failure releases the key and leaves
/// no object behind.
async fn upload(
    state: &AppState,
    job_id: Uuid,
    object: &str,
    (mode, options): (ImportMode, &ImportOptions),
    multipart: &mut Multipart,
    (limits, room): (&UploadLimits, u64),
) -> ApiResult<JobRow> {
    let max = state.settings.max_upload_bytes;
    let (limit, idle) = (max.min(room), state.settings.api.upload_idle_timeout);
    let mut guard = Reservation {
        state: Some((state.clone(), job_id, object.to_string())),
    };
    // With `columns=`, the file's head is kept to check that it has the headers named.
    let head = match options.columns {
        Some(_) => SAMPLE_BYTES,
        None => 0,
    };
    let take = Take { limit, idle, head };
    let upload = receive(multipart, limits, take, Sink::Store(&state.storage, object));
    let received = with_heartbeat(state, job_id, upload).await;
    let received = match received.and_then(|r| sniff::header_fits(options, r)) {
        Ok(r) => r,
        Err(e) => {
            guard.disarm();
            release(state, job_id, object).await;
            // Cut at the organization's free room rather than at MAX_UPLOAD_BYTES.
            if e.code == "upload_too_large" && limit < max {
                return Err(quota_exceeded(
                    state.settings.limits.fair.org_storage_quota_bytes,
                ));
            }
            return Err(e);
        }
    };
    let file = UploadedFile {
        fingerprint: &fingerprint(&received.sha256, mode, options),
        file_name: &received.file_name,
        size: received.size as i64,
    };
    // From here the reservation is a job: a client hanging up no longer undoes it.
    let finished = repo::finish_upload(&state.pool, job_id, &file).await;
    guard.disarm();
    match finished {
        Ok(Some(job)) => Ok(job),
        Ok(None) => {
            // Taken over as stale while this upload was slow: the other request owns the key.
            let _ = state.storage.delete(object).await;
            Err(ApiError::conflict(
                "upload_in_progress",
                "this upload took too long and its Idempotency-Key was reused; retry",
            ))
        }
        Err(e) => {
            release(state, job_id, object).await;
            Err(e.into())
        }
    }
}

/// Runs the upload `work`, refreshing the reservation of `job_id` every [`HEARTBEAT`]
/// meanwhile, so that it is not taken for a dead upload's.
async fn with_heartbeat<T>(
    state: &AppState,
    job_id: Uuid,
    work: impl std::future::Future<Output = T>,
) -> T {
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let _ = repo::heartbeat_upload(&state.pool, job_id).await;
        }
    };
    tokio::select! {
        r = work => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    }
}

/// Same key again: same mode and same file bytes give the existing job; anything else is 422.
/// The file is hashed in full, so a replay takes an upload slot like an upload.
async fn replay(
    state: &AppState,
    caller: &AuthUser,
    existing: &JobRow,
    (mode, options): (ImportMode, &ImportOptions),
    multipart: &mut Multipart,
    limits: &UploadLimits,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let reused = |what: &str| {
        ApiError::unprocessable(
            "idempotency_key_reused",
            format!("this Idempotency-Key was already used with a different {what}"),
        )
    };
    if existing.mode() != mode {
        return Err(reused("mode"));
    }
    if existing.options() != *options {
        return Err(reused("options"));
    }
    let _slot = upload_slot(state, caller.id, caller.org)?;
    let (limit, idle) = (
        state.settings.max_upload_bytes,
        state.settings.api.upload_idle_timeout,
    );
    let take = Take {
        limit,
        idle,
        head: 0,
    };
    let received = receive(multipart, limits, take, Sink::Discard).await?;
    if fingerprint(&received.sha256, mode, options) != existing.request_fingerprint {
        return Err(reused("file"));
    }
    Ok((StatusCode::OK, Json(JobView::from(existing))))
}

/// Gives the key back after a failed upload; the storage write already left nothing behind,
/// the delete is a second guard.
async fn release(state: &AppState, job_id: Uuid, object: &str) {
    match repo::release(&state.pool, job_id).await {
        // Only an upload that never became a job may lose its object.
        Ok(true) => {
            let _ = state.storage.delete(object).await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(%job_id, error = %e, "could not release an idempotency key"),
    }
}

/// Releases the reservation if the request goes away before it becomes a job (the client
/// hung up, and hyper dropped the handler mid-await): the key must not stay reserved.
struct Reservation {
    state: Option<(AppState, Uuid, String)>,
}

impl Reservation {
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((state, job_id, object)) = self.state.take() {
            tokio::spawn(async move { release(&state, job_id, &object).await });
        }
    }
}
