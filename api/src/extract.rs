//! Extractors that reject bad input in the API's own error format.

use crate::{error::ApiError, request_limits};
use axum::{
    extract::{rejection::JsonRejection, FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Like `axum::Json`, but a malformed body is 400 `malformed_json`, a body of the wrong shape
/// 422 `invalid_body`, a wrong content type 415 `unsupported_media_type`, and a body over
/// `JSON_BODY_MAX_BYTES` or late past `REQUEST_TIMEOUT_SECONDS` 413 `body_too_large` or 408
/// `request_timeout` (`request_limits`).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) if request_limits::cause(&e).is_some() => {
                Err(request_limits::cause(&e).expect("checked").into())
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(
                "malformed_json",
                format!("malformed JSON: {}", e.body_text()),
            )),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::unprocessable("invalid_body", e.body_text()))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// Query parameters, percent-decoded (`delimiter=%3B`, `delimiter=%09`).
pub fn query_params(raw: Option<String>) -> HashMap<String, String> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// The largest page a keyset-paginated list answers.
pub const MAX_PAGE: i64 = 1000;

/// The `limit` query parameter of a paginated list: 1–[`MAX_PAGE`], 100 when absent; anything
/// else is 422 `invalid_query`.
pub fn page_limit(params: &HashMap<String, String>) -> Result<i64, ApiError> {
    match params.get("limit").map(String::as_str) {
        None | Some("") => Ok(100),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_query",
                    format!("limit must be an integer from 1 to {MAX_PAGE}"),
                )
            }),
    }
}
