//! `POST /imports` (streamed, idempotent upload), `GET /imports`, `GET /imports/{id}` and
//! `GET /imports/{id}/errors`.
//!
//! Idempotency: the first request with a key reserves it (a row in state `uploading`), then
//! streams the file to storage while hashing it. A request with the same key meanwhile gets
//! 409; afterwards it gets 200 and the same job when its file (SHA-256) and mode match, or
//! 422 when they do not. A failed upload (too large, client gone, storage down) releases the
//! key and leaves no object behind. A reservation whose upload stopped heartbeating (the API
//! died mid-upload) is taken over after a minute.
//!
//! Fair shares (docs/configuration.md, Limits): every request that streams a file — a new
//! upload or a replay, which hashes the whole file — holds an upload slot ([`crate::quota`]);
//! a new key also needs room in the organization's storage quota (413
//! `storage_quota_exceeded`) and a place in its window of new jobs (429 `too_many_new_jobs`),
//! and the user and the organization must be under their unfinished-jobs caps.

use crate::{
    access::visible_job,
    auth::AuthUser,
    error::{ApiError, ApiResult},
    error_rows::{self, ErrorRowPage},
    extract::{page_limit, query_params},
    routes::downloads,
    state::AppState,
    upload_limits::{LimitedMultipart, UploadLimits},
    view::{JobPage, JobView},
};
use axum::{
    extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bulk_import_core::{
    hashing::HashingReader,
    job::{fingerprint, rows_report_key, upload_key},
    options::{self, ImportOptions},
    org_quota,
    repo::{self, NewReservation, UploadedFile},
    storage::{StorageError, StreamStop},
    ImportMode, JobRow, JobStatus,
};
use futures_util::StreamExt;
use serde::Serialize;
use std::{collections::HashMap, time::Duration};
use tokio_util::io::StreamReader;
use uuid::Uuid;

const MAX_KEY_LEN: usize = 255;
/// An `uploading` reservation not refreshed for this long belongs to a dead upload: its key
/// is taken over by the next request with it, and the sweeper removes it with its object.
pub const STALE_UPLOAD: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/imports",
            post(create)
                .layer(DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(
                    crate::upload_limits::close_after_error,
                ))
                .get(list),
        )
        .route("/imports/{id}", get(show))
        .route("/imports/{id}/errors", get(errors_report))
}

/// `dry_run`, `max_errors`, `delimiter` and `encoding` from the query (422 when invalid).
fn import_options(params: &HashMap<String, String>) -> ApiResult<ImportOptions> {
    let invalid = |code: &'static str, message: String| ApiError::unprocessable(code, message);
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let dry_run = match get("dry_run") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(invalid(
                "invalid_dry_run",
                format!("dry_run must be true or false, not {other:?}"),
            ))
        }
    };
    let max_errors = match get("max_errors") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            invalid(
                "invalid_max_errors",
                "max_errors must be a whole number, 0 or more".into(),
            )
        })?),
    };
    // A literal tab is usually sent as %09; an unencoded one never survives a URL.
    let delimiter = get("delimiter")
        .map(options::parse_delimiter)
        .transpose()
        .map_err(|e| invalid("invalid_delimiter", e))?;
    let encoding = get("encoding")
        .map(options::parse_encoding)
        .transpose()
        .map_err(|e| invalid("invalid_encoding", e))?
        .map(str::to_string);
    Ok(ImportOptions {
        dry_run,
        max_errors,
        delimiter,
        encoding,
    })
}

/// A display name from the client's file name: last path component, no control characters,
/// at most 255 characters. It is only ever shown, never used as a storage key.
fn display_name(raw: Option<&str>) -> String {
    let base = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let clean = clean.trim().to_string();
    if clean.is_empty() {
        "upload.csv".into()
    } else {
        clean
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the file is larger than {limit} bytes"),
    )
}

struct Received {
    size: u64,
    sha256: String,
    file_name: String,
}

/// Where a received file goes: into storage under a key, or nowhere (a replay is only hashed).
enum Sink<'a> {
    Store(&'a bulk_import_core::Storage, &'a str),
    Discard,
}

/// Streams the `file` field through the hasher into `sink`, enforcing `limit` as it goes
/// (and the request's own limits, `upload_limits`).
async fn receive(
    multipart: &mut Multipart,
    limits: &UploadLimits,
    limit: u64,
    idle: Duration,
    sink: Sink<'_>,
) -> ApiResult<Received> {
    let mut parts = 0;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                return Err(ApiError::unprocessable(
                    "missing_file",
                    "multipart field `file` is required",
                ))
            }
            Err(e) => {
                return Err(limits
                    .error()
                    .unwrap_or_else(|| ApiError::bad_request("invalid_multipart", e.body_text())))
            }
        };
        parts += 1;
        limits.check_part(parts)?;
        if field.name() != Some("file") {
            continue;
        }
        limits.file_started();
        let file_name = display_name(field.file_name());
        // Each chunk must arrive within `idle`: a stalled client is cut, not waited for. Why
        // the stream stopped travels inside its io::Error (`StreamStop`).
        let stream = futures_util::stream::unfold(field, move |mut field| async move {
            match tokio::time::timeout(idle, field.next()).await {
                Err(_) => Some((Err(StreamStop::Stalled.into_io()), field)),
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), field)),
                Ok(Some(Err(e))) => Some((Err(StreamStop::Broken(e.body_text()).into_io()), field)),
            }
        });
        let stream = Box::pin(stream);
        let mut reader = HashingReader::new(StreamReader::new(stream), limit);
        let written = match sink {
            Sink::Store(storage, key) => storage.put_stream(key, &mut reader).await,
            Sink::Discard => tokio::io::copy(&mut reader, &mut tokio::io::sink())
                .await
                .map_err(StorageError::from),
        };
        return match written {
            Ok(size) => Ok(Received {
                size,
                sha256: reader.hex_digest(),
                file_name,
            }),
            Err(e) if matches!(e.stream_stop(), Some(StreamStop::TooLarge(_))) => {
                Err(too_large(limit))
            }
            Err(_) if limits.error().is_some() => Err(limits.error().expect("checked")),
            Err(e) if matches!(e.stream_stop(), Some(StreamStop::Stalled)) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!("the upload sent nothing for {} s", idle.as_secs()),
            )),
            Err(e) if matches!(e.stream_stop(), Some(StreamStop::Broken(_))) => {
                Err(ApiError::bad_request(
                    "invalid_multipart",
                    "the upload was interrupted or malformed",
                ))
            }
            Err(e) if e.is_transient() => {
                tracing::error!(error = %e, "storage unavailable during upload");
                Err(ApiError::unavailable("storage"))
            }
            Err(e) => Err(ApiError::internal(e)),
        };
    }
}

/// The upload's multipart form, for the OpenAPI document (the Swagger UI shows a file
/// picker for it); the handler reads the body as a stream, not through this type.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The CSV file (UTF-8, a legacy encoding or UTF-16; optionally gzip-compressed).
    #[schema(value_type = String, format = Binary)]
    file: String,
}

/// Upload a CSV file and start an import.
#[utoipa::path(post, path = "/imports", tag = "imports",
    params(("mode" = Option<String>, Query, description = "insert_only (default) or upsert"),
           ("dry_run" = Option<bool>, Query, description = "true: run every check (duplicate_in_db included) and report exactly what a real run would, but write no customer row"),
           ("max_errors" = Option<i64>, Query, description = "stop the job `failed` with `too_many_errors` once more than N rows are bad (checked at batch boundaries; committed batches stay)"),
           ("delimiter" = Option<String>, Query, description = "override delimiter detection: `,` `;` `|` or a tab (`%09`), or comma, semicolon, pipe, tab"),
           ("encoding" = Option<String>, Query, description = "override encoding detection: a WHATWG label such as utf-8, windows-1251, windows-1252, utf-16le"),
           ("Idempotency-Key" = String, Header, description = "any non-empty string, unique per user; the same key with a different file, mode or options is 422")),
    request_body(content = UploadForm, content_type = "multipart/form-data", description = "field `file`: the CSV"),
    responses((status = 201, body = JobView, description = "new job; `Location: /imports/{id}`", headers(("Location" = String, description = "the job's address"))),
              (status = 200, body = JobView, description = "same key, same file and mode (with `Location` too)"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 408, body = crate::error::ErrorBody, description = "upload_timeout: nothing sent, or the file part not reached, within UPLOAD_IDLE_TIMEOUT_SECONDS, or the request not over within UPLOAD_TIMEOUT_SECONDS; upload_too_slow: under UPLOAD_MIN_BYTES_PER_SECOND over a window"),
              (status = 409, body = crate::error::ErrorBody, description = "the first request with this key is still uploading"),
              (status = 413, body = crate::error::ErrorBody, description = "upload_too_large, upload_head_too_large, too_many_parts, storage_quota_exceeded (the organization's ORG_STORAGE_QUOTA_BYTES)"),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody, description = "too_many_uploads (replays count), too_many_unfinished_jobs, too_many_new_jobs (with Retry-After)")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    multipart: Result<LimitedMultipart, ApiError>,
) -> ApiResult<(StatusCode, [(header::HeaderName, String); 1], Json<JobView>)> {
    use tracing::Instrument;
    // The work runs on a task of its own: a client that hangs up right after its last byte
    // (hyper then drops this handler) still gets its job created and run. A client that
    // hangs up earlier breaks the body stream, and the task releases the key.
    let work = create_job(state, user, query, headers, multipart).in_current_span();
    let (status, job) = tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(e)))?;
    // The job's own address, on a new job and on a replay alike.
    let location = format!("/imports/{}", job.id);
    Ok((status, [(header::LOCATION, location)], job))
}

#[tracing::instrument(skip_all, fields(user_id = %caller.id, org_id = caller.org))]
async fn create_job(
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
    let limit = state.settings.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(64 * 1024)) {
        return Err(too_large(limit));
    }
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
    let (_slot, room) = match admitted {
        Ok(admitted) => admitted,
        Err(e) => {
            release(&state, job_id, &object).await;
            return Err(e);
        }
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
    // Handed over on its own task, so that a client hanging up now cannot stop it (the
    // answer still waits for it, so an ImportJob exists once the upload is answered); if it
    // fails, the job stays pending and the sweeper hands it over again.
    let executor = state.executor.clone();
    let submitted = tokio::spawn(async move {
        if let Err(e) = executor.submit(job_id).await {
            tracing::error!(%job_id, error = format!("{e:#}"), "could not hand the job to the executor");
        }
    });
    let _ = submitted.await;
    Ok((StatusCode::CREATED, Json(JobView::from(&job))))
}

fn parse_mode(params: &HashMap<String, String>) -> ApiResult<ImportMode> {
    match params.get("mode").map(String::as_str) {
        None | Some("") => Ok(ImportMode::InsertOnly),
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError::unprocessable("invalid_mode", e)),
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<String> {
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
    let upload = receive(
        multipart,
        limits,
        limit,
        idle,
        Sink::Store(&state.storage, object),
    );
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let _ = repo::heartbeat_upload(&state.pool, job_id).await;
        }
    };
    let received = tokio::select! {
        r = upload => r,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };
    let received = match received {
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

/// 429 when the user already has `JOBS_MAX_UNFINISHED_PER_USER` jobs not done or failed, or
/// their organization `JOBS_MAX_UNFINISHED_PER_ORG` — unless `key` is already one of theirs
/// (a replay answers with its job, not 429).
async fn unfinished_jobs_quota(state: &AppState, user: Uuid, org: i32, key: &str) -> ApiResult<()> {
    let l = &state.settings.limits;
    let (max_user, max_org) = (
        l.jobs_max_unfinished_per_user,
        l.fair.jobs_max_unfinished_per_org,
    );
    let n = repo::unfinished_of(&state.pool, user, org, key).await?;
    let message = if n.replay {
        return Ok(());
    } else if n.user >= max_user {
        format!("you have {} imports not finished yet (at most {max_user}); retry when one has finished", n.user)
    } else if n.org >= max_org {
        format!("your organization has {} imports not finished yet (at most {max_org}); retry when one has finished", n.org)
    } else {
        return Ok(());
    };
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_unfinished_jobs",
        message,
    );
    e.retry_after = Some(30);
    Err(e)
}

/// An upload slot for the request (a new upload or a replay), or 429 `too_many_uploads`.
fn upload_slot(state: &AppState, user: Uuid, org: i32) -> ApiResult<crate::quota::Slot> {
    use crate::quota::Full;
    state.upload_slots.try_acquire(user, org).map_err(|full| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            match full {
                Full::User => "you have too many uploads in progress; retry when one has finished",
                Full::Org => {
                    "your organization has too many uploads in progress; retry when one has finished"
                }
                Full::Process => "the server has too many uploads in progress; retry shortly",
            },
        );
        e.retry_after = Some(5);
        e
    })
}

fn quota_exceeded(quota: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage_quota_exceeded",
        format!(
            "your organization's imports would keep more than {quota} bytes in storage \
             (uploads and reports of imports not deleted); delete finished imports to make room"
        ),
    )
}

/// A new job for the organization: 413 `storage_quota_exceeded` when its uploads and reports
/// leave no room for this file (`declared`: its Content-Length), 429 `too_many_new_jobs` past
/// `JOBS_CREATED_MAX_PER_ORG` in the window. Returns the room left, which caps the upload as it
/// streams. Uploads of one organization that run at once each see the room left at their
/// start (at most `UPLOADS_MAX_PER_ORG` of them).
async fn admit_new_job(state: &AppState, org: i32, declared: Option<u64>) -> ApiResult<u64> {
    let fair = &state.settings.limits.fair;
    let stored = repo::stored_bytes(&state.pool, org).await?.max(0) as u64;
    let room = fair.org_storage_quota_bytes.saturating_sub(stored);
    // The declared length includes the multipart framing: a little slack for it.
    if room == 0 || declared.is_some_and(|n| n > room.saturating_add(64 * 1024)) {
        return Err(quota_exceeded(fair.org_storage_quota_bytes));
    }
    let counted = org_quota::count_new_job(&state.pool, org, fair.jobs_created_window).await?;
    if counted.created > fair.jobs_created_max_per_org {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_new_jobs",
            format!(
                "your organization started {} imports in {} s (at most {}); retry later",
                fair.jobs_created_max_per_org,
                fair.jobs_created_window.as_secs(),
                fair.jobs_created_max_per_org
            ),
        );
        e.retry_after = Some(counted.window_left as u64);
        return Err(e);
    }
    Ok(room)
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
    let received = receive(multipart, limits, limit, idle, Sink::Discard).await?;
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

/// The organization's jobs (with `mine=true`, only the caller's), newest first.
#[utoipa::path(get, path = "/imports", operation_id = "list_imports", tag = "imports",
    params(("limit" = Option<i64>, Query, description = "1–100, default 20"), ("offset" = Option<i64>, Query, description = "default 0"),
           ("mine" = Option<bool>, Query, description = "true: only the jobs the caller started")),
    responses((status = 200, body = JobPage), (status = 401, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<JobPage>> {
    let params = query_params(query);
    let number = |name: &str, default: i64, min: i64, max: i64| -> ApiResult<i64> {
        match params.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::unprocessable(
                    "invalid_query",
                    format!("{name} must be an integer from {min} to {max}"),
                )),
            },
        }
    };
    let limit = number("limit", 20, 1, 100)?;
    let offset = number("offset", 0, 0, i64::MAX)?;
    let mine = match params.get("mine").map(String::as_str) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!("mine must be true or false, not {other:?}"),
            ))
        }
    };
    let started_by = mine.then_some(user.id);
    let (jobs, total) =
        repo::list_visible(&state.pool, user.org, started_by, limit, offset).await?;
    Ok(Json(JobPage {
        items: jobs.iter().map(JobView::from).collect(),
        limit,
        offset,
        total,
    }))
}

/// One job: status, counters and progress.
#[utoipa::path(get, path = "/imports/{id}", operation_id = "show_import", tag = "imports", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(JobView::from(&visible_job(&state, &user, &id).await?)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportLink {
    /// GET it without credentials until it expires.
    pub url: String,
    pub expires_in: u64,
}

/// A download URL for the job's errors.csv, or (`format=rows`) for a file of just the bad
/// rows in the five standard columns, to fix and upload again; or (`format=json`) the bad rows
/// themselves, a page at a time.
#[utoipa::path(get, path = "/imports/{id}/errors", tag = "imports",
    params(("id" = Uuid, Path),
           ("format" = Option<String>, Query, description = "`report` (default): errors.csv with line, code, message and the values; `rows`: just the bad rows, header `email,first_name,last_name,phone,city`, values as read, re-importable; `json`: the bad rows themselves, a page at a time (`ErrorRowPage`), at any time"),
           ("limit" = Option<i64>, Query, description = "`format=json`: 1–1000, default 100"),
           ("after" = Option<i64>, Query, description = "`format=json`: the `next_after` of the page before (rows after this line)")),
    responses((status = 200, body = ReportLink, description = "a download link; with `format=json` an `ErrorRowPage` instead"), (status = 404, body = crate::error::ErrorBody, description = "no report: no error rows, or the job failed before writing one"),
              (status = 409, body = crate::error::ErrorBody, description = "the job has not finished"),
              (status = 422, body = crate::error::ErrorBody, description = "unknown format")),
    security(("bearer" = [])))]
pub async fn errors_report(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let params = query_params(query);
    let rows = match params.get("format").map(String::as_str) {
        None | Some("" | "report") => false,
        Some("rows") => true,
        Some("json") => return error_rows_page(&state, &user, &id, &params).await,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_format",
                format!("format must be report, rows or json, not {other:?}"),
            ))
        }
    };
    let job = visible_job(&state, &user, &id).await?;
    let key = match (job.status(), &job.report_object) {
        // A job stopped by max_errors has a report too.
        (JobStatus::Done | JobStatus::Failed, Some(key)) => key.clone(),
        (JobStatus::Done, None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_errors",
                "the import finished without error rows",
            ))
        }
        (JobStatus::Failed, None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_report",
                "the import failed before writing a report; see its error",
            ))
        }
        _ => {
            return Err(ApiError::conflict(
                "report_not_ready",
                "the import has not finished yet",
            ))
        }
    };
    let key = if rows {
        let rows_key = rows_report_key(job.id);
        // Jobs finished before this file existed have only errors.csv.
        match state.storage.size(&rows_key).await {
            Ok(_) => rows_key,
            Err(StorageError::NotFound(_)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_rows_report",
                    "this import has no file of bad rows (it predates them); use errors.csv",
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "storage unavailable");
                return Err(ApiError::unavailable("storage"));
            }
        }
    } else {
        key
    };
    let ttl = state.settings.presign_ttl;
    let url = match state.storage.presign_get(&key, ttl).await {
        Ok(Some(url)) => url,
        Ok(None) => downloads::signed_url(&state, &key)?,
        Err(e) => {
            tracing::error!(error = %e, "presigning failed");
            return Err(ApiError::unavailable("storage"));
        }
    };
    Ok(Json(ReportLink {
        url,
        expires_in: ttl.as_secs(),
    })
    .into_response())
}

/// `format=json`: a page of the job's stored bad rows, by line (`after`, `limit`), at any
/// point of the job's life (rows committed so far while it runs).
async fn error_rows_page(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    params: &HashMap<String, String>,
) -> ApiResult<Response> {
    let limit = page_limit(params)?;
    let after = match params.get("after").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::unprocessable("invalid_query", "after must be a line number")
        })?,
    };
    let job = visible_job(state, user, id).await?;
    let items = error_rows::page(&state.pool, job.id, after, limit).await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.line))
        .flatten();
    Ok(Json(ErrorRowPage {
        items,
        next_after,
        error_rows: job.error_rows,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_cleaned() {
        assert_eq!(display_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(display_name(Some("C:\\Users\\me\\list.csv")), "list.csv");
        assert_eq!(display_name(Some("a\u{0}b\nc.csv")), "abc.csv");
        assert_eq!(display_name(None), "upload.csv");
        assert_eq!(display_name(Some(&"x".repeat(300))).len(), 255);
    }
}
