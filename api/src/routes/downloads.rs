//! Report downloads with `STORAGE=fs`: the API signs an expiring link (an HMAC token with
//! the same secret as access tokens, but its own audience, so neither works as the other)
//! and serves the file itself.

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};
use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

const AUDIENCE: &str = "bulk-import-download";

pub fn router() -> Router<AppState> {
    Router::new().route("/downloads/{token}", get(download))
}

#[derive(Serialize, Deserialize)]
struct DownloadClaims {
    key: String,
    aud: String,
    exp: i64,
}

pub fn signed_url(state: &AppState, key: &str) -> ApiResult<String> {
    let claims = DownloadClaims {
        key: key.to_string(),
        aud: AUDIENCE.into(),
        exp: chrono::Utc::now().timestamp() + state.settings.presign_ttl.as_secs() as i64,
    };
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(state.settings.jwt_secret.expose_secret().as_bytes()),
    )
    .map_err(ApiError::internal)?;
    // Never the client's Host header: a forged one would make the API hand out links to
    // another host. Without PUBLIC_API_URL (refused with APP_ENV=prod) the bind address.
    let base = match &state.settings.api.public_url {
        Some(u) => u.clone(),
        None => format!("http://{}", state.settings.api.bind_addr),
    };
    Ok(format!("{base}/downloads/{token}"))
}

async fn download(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    let claims = decode::<DownloadClaims>(
        &token,
        &DecodingKey::from_secret(state.settings.jwt_secret.expose_secret().as_bytes()),
        &validation,
    )
    .map_err(|_| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_link",
            "the link is invalid or has expired",
        )
    })?
    .claims;
    let reader = state
        .storage
        .open_read(&claims.key, 0)
        .await
        .map_err(|e| match e {
            bulk_import_core::storage::StorageError::NotFound(_) => ApiError::not_found(),
            other if other.is_transient() => {
                tracing::error!(error = %other, "storage unavailable");
                ApiError::unavailable("storage")
            }
            other => ApiError::internal(other),
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"errors.csv\"",
            ),
        ],
        Body::from_stream(ReaderStream::new(reader)),
    )
        .into_response())
}
