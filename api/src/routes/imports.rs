//! `POST /imports` (the streamed, idempotent upload: `crate::upload`), `GET /imports`,
//! `GET /imports/{id}` and `GET /imports/{id}/errors`.

use crate::{
    access::visible_job,
    auth::AuthUser,
    error::{ApiError, ApiResult},
    error_rows::{self, ErrorRowPage},
    extract::{page_limit, query_params},
    routes::downloads,
    state::AppState,
    upload::create_job,
    upload_limits::LimitedMultipart,
    view::{JobPage, JobView},
};
use axum::{
    extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bulk_import_core::{job::rows_report_key, repo, storage::StorageError, JobRow, JobStatus};
use serde::Serialize;
use std::collections::HashMap;
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
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (crate::import_object::ObjectImport = "application/json"),
    ), description = "multipart: field `file`, the CSV (options in the query); JSON: an object already in storage under the organization's import prefixes (options in the body)"),
    responses((status = 201, body = JobView, description = "new job; `Location: /imports/{id}`", headers(("Location" = String, description = "the job's address"))),
              (status = 200, body = JobView, description = "same key, same file and mode (with `Location` too)"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 408, body = crate::error::ErrorBody, description = "upload_timeout: nothing sent, or the file part not reached, within UPLOAD_IDLE_TIMEOUT_SECONDS, or the request not over within UPLOAD_TIMEOUT_SECONDS; upload_too_slow: under UPLOAD_MIN_BYTES_PER_SECOND over a window"),
              (status = 409, body = crate::error::ErrorBody, description = "the first request with this key is still uploading"),
              (status = 413, body = crate::error::ErrorBody, description = "upload_too_large, upload_head_too_large, too_many_parts, storage_quota_exceeded (the organization's ORG_STORAGE_QUOTA_BYTES)"),
              (status = 422, body = crate::error::ErrorBody, description = "among others, for a JSON body: source_not_allowed (the key is not under the organization's import prefixes), source_not_found"),
              (status = 429, body = crate::error::ErrorBody, description = "too_many_uploads (replays count), too_many_unfinished_jobs, too_many_new_jobs (with Retry-After)")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<(StatusCode, [(header::HeaderName, String); 1], Json<JobView>)> {
    use tracing::Instrument;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    // The work runs on a task of its own: a client that hangs up right after its last byte
    // (hyper then drops this handler) still gets its job created and run. A client that
    // hangs up earlier breaks the body stream, and the task releases the key.
    let work = async move {
        if json {
            // An object already in storage (`crate::import_object`): a small JSON body.
            let crate::extract::Json(body) =
                crate::extract::Json::from_request(request, &state).await?;
            crate::import_object::create_job(state, user, headers, body).await
        } else {
            let multipart = LimitedMultipart::from_request(request, &state).await;
            create_job(state, user, query, headers, multipart).await
        }
    }
    .in_current_span();
    let (status, job) = tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(e)))?;
    // The job's own address, on a new job and on a replay alike.
    let location = format!("/imports/{}", job.id);
    Ok((status, [(header::LOCATION, location)], job))
}

/// The organization's jobs (with `mine=true`, only the caller's), newest first.
#[utoipa::path(get, path = "/imports", operation_id = "list_imports", tag = "imports",
    params(("limit" = Option<i64>, Query, description = "1–100, default 20"), ("offset" = Option<i64>, Query, description = "default 0"),
           ("mine" = Option<bool>, Query, description = "true: only the jobs the caller started"),
           ("status" = Option<String>, Query, description = "only jobs with this status: pending, processing, done, failed or cancelled")),
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
    let filter = repo::JobFilter {
        started_by: mine.then_some(user.id),
        status: status_filter(params.get("status").map(String::as_str))?,
    };
    let (jobs, total) = repo::list_visible(&state.pool, user.org, &filter, limit, offset).await?;
    Ok(Json(JobPage {
        items: jobs.iter().map(JobView::from).collect(),
        limit,
        offset,
        total,
    }))
}

/// The `status=` of a list: one of the public statuses (`uploading` is never listed).
fn status_filter(value: Option<&str>) -> ApiResult<Option<JobStatus>> {
    let status = match value {
        None | Some("") => return Ok(None),
        Some("pending") => JobStatus::Pending,
        Some("processing") => JobStatus::Processing,
        Some("done") => JobStatus::Done,
        Some("failed") => JobStatus::Failed,
        Some("cancelled") => JobStatus::Cancelled,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_query",
                format!(
                    "status must be pending, processing, done, failed or cancelled, not {other:?}"
                ),
            ))
        }
    };
    Ok(Some(status))
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
    let key = report_key(&state, &job, rows).await?;
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

/// The object to link for a finished job: errors.csv, or the file of bad rows (`rows`).
async fn report_key(state: &AppState, job: &JobRow, rows: bool) -> ApiResult<String> {
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
    if !rows {
        return Ok(key);
    }
    let rows_key = rows_report_key(job.id);
    // Jobs finished before this file existed have only errors.csv.
    match state.storage.size(&rows_key).await {
        Ok(_) => Ok(rows_key),
        Err(StorageError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_rows_report",
            "this import has no file of bad rows (it predates them); use errors.csv",
        )),
        Err(e) => {
            tracing::error!(error = %e, "storage unavailable");
            Err(ApiError::unavailable("storage"))
        }
    }
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
