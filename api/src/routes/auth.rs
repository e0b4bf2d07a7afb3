//! `POST /auth/register` and `POST /auth/token` (JSON as the seed service, or the OAuth2
//! password form that the Swagger UI's Authorize button sends).

use crate::{
    auth::check_password_strength,
    client_ip::client_ip,
    error::{ApiError, ApiResult},
    extract::Json,
    rate_limit::{self, LoginAttempt},
    state::AppState,
};
use axum::{
    extract::{ConnectInfo, FromRequest, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Form, Router,
};
use bulk_import_core::{email::EmailError, Email};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/token", post(token))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    #[schema(example = "user@test.com")]
    pub email: String,
    #[schema(example = "pass12345")]
    pub password: String,
}

#[derive(Deserialize)]
struct PasswordForm {
    username: String,
    password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

fn too_many(secs: u64, message: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message);
    e.retry_after = Some(secs);
    e
}

fn parse_email(raw: &str) -> ApiResult<Email> {
    Email::parse(raw).map_err(|e| match e {
        EmailError::Empty => ApiError::unprocessable("invalid_email", "email is required"),
        other => ApiError::unprocessable("invalid_email", other.to_string()),
    })
}

/// Create an account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = Credentials,
    responses((status = 201, body = UserView), (status = 409, description = "email taken", body = crate::error::ErrorBody),
              (status = 422, description = "invalid email or weak password", body = crate::error::ErrorBody),
              (status = 429, description = "too many registrations from this address", body = crate::error::ErrorBody),
              (status = 503, description = "too many password hashes queued", body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Credentials>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    let email = parse_email(&body.email)?;
    check_password_strength(&body.password)
        .map_err(|m| ApiError::unprocessable("weak_password", m))?;
    let ip = client_ip(&state.settings.limits.trusted_proxies, addr.ip(), &headers);
    if let Some(secs) = rate_limit::register_attempt(&state, ip).await {
        return Err(too_many(
            secs,
            "too many registrations from this address; try again later",
        ));
    }
    let hash = state.hasher.hash_password(body.password).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
        .bind(id)
        .bind(email.as_str())
        .bind(hash)
        .execute(&state.pool)
        .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "email_taken",
            "an account with this email already exists",
        ));
    }
    tracing::info!(user_id = %id, "user registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(UserView {
            id,
            email: email.into_string(),
        }),
    ))
}

/// Log in: returns a bearer token. Accepts JSON `{"email","password"}` or the OAuth2 form
/// (`username`, `password`). Attempts are limited (see `rate_limit`): 429 with `Retry-After`.
/// A successful login also sets the account's device cookie.
#[utoipa::path(post, path = "/auth/token", tag = "auth", request_body = Credentials,
    responses((status = 200, body = TokenView), (status = 401, description = "wrong credentials", body = crate::error::ErrorBody),
              (status = 429, description = "too many attempts", body = crate::error::ErrorBody),
              (status = 503, description = "too many password checks queued", body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> ApiResult<Response> {
    let headers = req.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (email, password) = if is_form {
        let Form(f) = Form::<PasswordForm>::from_request(req, &state)
            .await
            .map_err(|e| ApiError::unprocessable("invalid_body", e.body_text()))?;
        (f.username, f.password)
    } else {
        let Json(c) = Json::<Credentials>::from_request(req, &state).await?;
        (c.email, c.password)
    };
    let wrong = || ApiError::unauthorized("wrong email or password");
    // An address that cannot be valid cannot have an account; still counted as an attempt
    // (under its hash, like every email).
    let email = Email::parse(&email)
        .map(Email::into_string)
        .unwrap_or_else(|_| email.trim().to_lowercase());
    let email_hash = rate_limit::email_hash(&email);
    let ip = client_ip(&state.settings.limits.trusted_proxies, addr.ip(), &headers);
    let device = state.tokens.device_id(&headers, &email_hash);
    let attempt = LoginAttempt::new(
        &state.settings.redis_key_prefix,
        &email_hash,
        ip,
        device.as_deref(),
    );
    if let Some(secs) = rate_limit::login_attempt(&state, &attempt).await {
        return Err(too_many(secs, "too many login attempts; try again later"));
    }
    let user: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&state.pool)
            .await?;
    let (id, hash) = user.unzip();
    if !state.hasher.verify_password(password, hash).await? {
        return Err(wrong());
    }
    let id = id.ok_or_else(wrong)?;
    rate_limit::login_succeeded(&state, &attempt).await;
    let secure = state.settings.app_env == bulk_import_core::settings::AppEnv::Prod;
    let cookie = state.tokens.device_cookie(&email_hash, secure)?;
    let mut response = axum::Json(TokenView {
        access_token: state.tokens.issue(id)?,
        token_type: "bearer",
        expires_in: state.tokens.ttl.as_secs(),
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}
