//! `POST /auth/register` and `POST /auth/token` (JSON as the seed service, or the OAuth2
//! password form that the Swagger UI's Authorize button sends).
//!
//! Registering joins an organization (docs/organizations.md): the one of an invitation, or,
//! without one and with `SIGNUP=open`, a new organization the user owns.

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
use bulk_import_core::{
    accounts::{self, Joining, Organization, Registered, Role},
    email::EmailError,
    settings::Signup,
    Email,
};
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Registration {
    #[schema(example = "user@test.com")]
    pub email: String,
    #[schema(example = "pass12345")]
    pub password: String,
    /// A token from `POST /orgs/invitations`: join that organization. Without it (and with
    /// `SIGNUP=open`) a new organization is created with the user as its owner.
    #[serde(default)]
    pub invitation: Option<String>,
    /// The name of the new organization (without an invitation); by default the email.
    #[serde(default)]
    #[schema(example = "Acme")]
    pub organization: Option<String>,
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
    pub organization: OrganizationRef,
    /// `owner`, `admin` or `member`.
    #[schema(example = "owner")]
    pub role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganizationRef {
    pub id: i32,
    pub name: String,
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

/// Create an account: in the organization of an invitation, or (`SIGNUP=open`) in a new
/// organization the user owns.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = Registration,
    responses((status = 201, body = UserView), (status = 409, description = "email taken", body = crate::error::ErrorBody),
              (status = 403, description = "`invitation_required`: SIGNUP=invitation and no invitation", body = crate::error::ErrorBody),
              (status = 422, description = "invalid email, weak password, or `invalid_invitation` (unknown, used, revoked, expired, or for another email)", body = crate::error::ErrorBody),
              (status = 429, description = "too many registrations from this address", body = crate::error::ErrorBody),
              (status = 503, description = "too many password hashes queued", body = crate::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Registration>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    let email = parse_email(&body.email)?;
    check_password_strength(&body.password)
        .map_err(|m| ApiError::unprocessable("weak_password", m))?;
    let invitation = body
        .invitation
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if invitation.is_none() && state.settings.api.signup == Signup::Invitation {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invitation_required",
            "sign-up is by invitation only: ask an owner or admin of your organization for one",
        ));
    }
    let org_name = organization_name(body.organization.as_deref(), &email)?;
    let ip = client_ip(&state.settings.limits.trusted_proxies, addr.ip(), &headers);
    if let Some(secs) = rate_limit::register_attempt(&state, ip).await {
        return Err(too_many(
            secs,
            "too many registrations from this address; try again later",
        ));
    }
    let hash = state.hasher.hash_password(body.password).await?;
    let id = Uuid::new_v4();
    let token_hash = invitation.map(accounts::token_hash);
    let joining = match &token_hash {
        Some(token_hash) => Joining::Invitation { token_hash },
        None => Joining::NewOrganization { name: &org_name },
    };
    let registered = accounts::register(&state.pool, id, email.as_str(), &hash, joining).await?;
    let (organization, role) = created(registered)?;
    tracing::info!(user_id = %id, org_id = organization.id, %role, "user registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(UserView {
            id,
            email: email.into_string(),
            organization: OrganizationRef {
                id: organization.id,
                name: organization.name,
            },
            role: role.to_string(),
        }),
    ))
}

/// The name of the organization a sign-up creates: the one given (without control
/// characters, at most 200 characters), else the email.
fn organization_name(given: Option<&str>, email: &Email) -> ApiResult<String> {
    match given.map(str::trim) {
        None | Some("") => Ok(email.as_str().to_string()),
        Some(name) if name.chars().count() > 200 => Err(ApiError::unprocessable(
            "invalid_organization",
            "the organization's name is longer than 200 characters",
        )),
        Some(name) => Ok(name.chars().filter(|c| !c.is_control()).collect()),
    }
}

/// The account a registration created, or why it created none.
fn created(registered: Registered) -> ApiResult<(Organization, Role)> {
    match registered {
        Registered::Created { organization, role } => Ok((organization, role)),
        Registered::EmailTaken => Err(ApiError::conflict(
            "email_taken",
            "an account with this email already exists",
        )),
        Registered::InvalidInvitation => Err(ApiError::unprocessable(
            "invalid_invitation",
            "the invitation is unknown, already used, revoked or expired, or was issued for another email",
        )),
    }
}

/// The email and password of a login, from JSON `{"email","password"}` or the OAuth2 form
/// (`username`, `password`).
async fn credentials(req: Request, state: &AppState) -> ApiResult<(String, String)> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let Form(f) = Form::<PasswordForm>::from_request(req, state)
            .await
            .map_err(|e| match crate::request_limits::cause(&e) {
                Some(limit) => limit.into(),
                None => ApiError::unprocessable("invalid_body", e.body_text()),
            })?;
        Ok((f.username, f.password))
    } else {
        let Json(c) = Json::<Credentials>::from_request(req, state).await?;
        Ok((c.email, c.password))
    }
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
    let (email, password) = credentials(req, &state).await?;
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
    let login = accounts::find_login(&state.pool, &email).await?;
    let (account, hash) = login.map(|l| ((l.id, l.org_id), l.password_hash)).unzip();
    if !state.hasher.verify_password(password, hash).await? {
        return Err(wrong());
    }
    let (id, org) = account.ok_or_else(wrong)?;
    rate_limit::login_succeeded(&state, &attempt).await;
    let secure = state.settings.app_env == bulk_import_core::settings::AppEnv::Prod;
    let cookie = state.tokens.device_cookie(&email_hash, secure)?;
    let mut response = axum::Json(TokenView {
        access_token: state.tokens.issue(id, org)?,
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
