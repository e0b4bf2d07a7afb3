//! The API's error type: every failure is an RFC 9457 problem document
//! (`application/problem+json`: `type`, `title`, `status`, `detail`) that also carries the
//! stable `code` and the `message` the seed service's clients read. Every code is listed once,
//! in [`CODES`] (the OpenAPI document's enum and docs/api.md's table are checked against it).
//! Internal errors are logged with their cause and answered with a generic message.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

/// Every error code the API answers with, and what it means. One list: `ApiError::new`
/// refuses (in debug builds) a code missing here, the OpenAPI document's `code` enum is built
/// from it, and a test checks docs/api.md's table against it.
pub const CODES: &[(&str, &str)] = &[
    (
        "body_too_large",
        "the request body is larger than the route takes (`JSON_BODY_MAX_BYTES`)",
    ),
    ("email_taken", "an open account already uses this email"),
    ("forbidden", "the caller's role may not do this"),
    (
        "idempotency_key_reused",
        "the key was used for a different file or options",
    ),
    (
        "internal_error",
        "an unexpected failure; details are in the log under the request id",
    ),
    (
        "invalid_body",
        "the JSON body does not have the expected fields",
    ),
    (
        "invalid_columns",
        "`columns` is malformed, names an unknown column, maps a column or a header twice, has no email, or names a header the file does not have",
    ),
    (
        "invalid_delimiter",
        "`delimiter` is not one of `,` `;` `\\t` `|`",
    ),
    ("invalid_dry_run", "`dry_run` is not `true` or `false`"),
    ("invalid_email", "not an email address"),
    ("invalid_encoding", "`encoding` is not a supported encoding"),
    ("invalid_format", "`format` is not one the route knows"),
    (
        "invalid_idempotency_key",
        "the Idempotency-Key is empty, too long or not printable",
    ),
    (
        "invalid_invitation",
        "the invitation is unknown, used, revoked, expired or for another email",
    ),
    (
        "invalid_link",
        "the download link is malformed, expired or not for this object",
    ),
    (
        "invalid_max_errors",
        "`max_errors` is not a positive number",
    ),
    ("invalid_mode", "`mode` is not `insert_only` or `upsert`"),
    ("invalid_multipart", "the multipart body is malformed"),
    (
        "invalid_organization",
        "the organization name is empty or too long",
    ),
    (
        "invalid_prefix",
        "an import prefix is malformed, does not end with `/`, is not under `orgs/<organization id>/`, or there are too many",
    ),
    ("invalid_query", "a query parameter is malformed"),
    ("invalid_role", "the role is not `admin` or `member`"),
    (
        "invitation_required",
        "SIGNUP=invitation and the registration has no invitation",
    ),
    ("job_finished", "the job has already ended"),
    ("job_unfinished", "the job is still running"),
    ("malformed_json", "the body is not JSON"),
    (
        "missing_email_column",
        "the file's header names known columns but no email column",
    ),
    ("missing_file", "the multipart body has no `file` part"),
    (
        "missing_idempotency_key",
        "the upload has no Idempotency-Key header",
    ),
    ("no_errors", "the job has no bad rows"),
    ("no_report", "the job has no report file"),
    ("no_rows_report", "the job has no rows file"),
    ("not_failed", "only a failed job can be retried"),
    (
        "not_found",
        "no such resource, or not the caller's organization's",
    ),
    ("report_not_ready", "the report is not written yet"),
    (
        "request_timeout",
        "the request body did not arrive within `REQUEST_TIMEOUT_SECONDS`",
    ),
    (
        "server_busy",
        "too much work queued; retry after the `Retry-After` seconds",
    ),
    (
        "service_unavailable",
        "a service the route needs is down; retry later",
    ),
    (
        "source_not_allowed",
        "the source key is malformed or not under the organization's import prefixes",
    ),
    (
        "source_not_found",
        "there is no object with the source key in storage",
    ),
    (
        "storage_quota_exceeded",
        "the organization's stored bytes would pass `ORG_STORAGE_QUOTA_BYTES`",
    ),
    (
        "too_many_attempts",
        "too many attempts; retry after the `Retry-After` seconds",
    ),
    (
        "too_many_connections",
        "too many open connections, in all or from this address",
    ),
    ("too_many_exports", "too many customer exports at once"),
    ("too_many_invitations", "too many pending invitations"),
    (
        "too_many_new_jobs",
        "the organization created `JOBS_CREATED_MAX_PER_ORG` jobs in the window",
    ),
    ("too_many_parts", "the multipart body has too many parts"),
    ("too_many_streams", "too many event streams open"),
    ("too_many_unfinished_jobs", "too many unfinished jobs"),
    ("too_many_uploads", "too many uploads at once"),
    (
        "unauthorized",
        "missing, malformed, expired or revoked token, or wrong credentials",
    ),
    (
        "unsupported_media_type",
        "the body's Content-Type is not the one the route takes",
    ),
    (
        "upload_head_too_large",
        "the multipart headers before the file are too large",
    ),
    (
        "upload_in_progress",
        "an upload with this key is still arriving",
    ),
    (
        "upload_timeout",
        "the upload stalled, or took longer than `UPLOAD_TIMEOUT_SECONDS`",
    ),
    (
        "upload_too_large",
        "the file is larger than `MAX_UPLOAD_BYTES`",
    ),
    (
        "upload_too_slow",
        "the upload arrived below `UPLOAD_MIN_BYTES_PER_SECOND`",
    ),
    ("weak_password", "the password does not meet the rule"),
];

/// An error as the API answers it (RFC 9457 problem details, plus `code` and `message`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A URI naming the problem type: `urn:bulk-import:error:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:bulk-import:error:invalid_email")]
    pub problem_type: String,
    /// The HTTP status's reason phrase.
    #[schema(example = "Unprocessable Entity")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong, for people (the same text as `message`).
    pub detail: String,
    /// Stable, machine-readable code (docs/api.md lists them).
    #[schema(example = "invalid_email")]
    pub code: &'static str,
    /// What went wrong, for people (kept for clients of the seed service).
    pub message: String,
}

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        debug_assert!(
            CODES.iter().any(|(c, _)| *c == code),
            "error code {code:?} is not listed in api/src/error.rs CODES"
        );
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unavailable(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{what} is unavailable; try again later"),
        )
    }

    /// The problem document this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            problem_type: format!("urn:bulk-import:error:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: self.message.clone(),
            code: self.code,
            message: self.message.clone(),
        }
    }

    /// Logs `cause` and answers 500 without details.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if bulk_import_core::db::is_transient(&e) {
            tracing::error!(error = %e, "database unavailable");
            return ApiError::unavailable("the database");
        }
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_unique_and_snake_case() {
        let names: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "CODES sorted by code, each once");
        for c in names {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
        }
    }

    /// docs/api.md's table of error codes is CODES, no more, no less.
    #[test]
    fn the_api_docs_list_every_code() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
            .unwrap();
        let section = doc
            .split("### Error codes")
            .nth(1)
            .expect("docs/api.md has a '### Error codes' section");
        let listed: Vec<&str> = section
            .lines()
            .take_while(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        let codes: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            listed, codes,
            "docs/api.md's error code table differs from CODES"
        );
    }

    /// Every code in CODES is used by some route (none left behind by a removed one).
    #[test]
    fn every_code_is_used() {
        let mut text = String::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("error.rs")
                {
                    text.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let own = [
            "internal_error",
            "not_found",
            "service_unavailable",
            "unauthorized",
        ];
        for (code, _) in CODES {
            assert!(
                own.contains(code) || text.contains(&format!("\"{code}\"")),
                "{code} is listed in CODES but no route answers it"
            );
        }
    }

    #[tokio::test]
    async fn an_error_is_a_problem_document_with_its_code() {
        let response = ApiError::unprocessable("invalid_email", "not an email").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:bulk-import:error:invalid_email",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "not an email",
                "code": "invalid_email",
                "message": "not an email",
            })
        );
    }
}
