//! Passwords (argon2id) and access tokens (JWT, HS256/384/512 as `JWT_ALG` says), and the
//! `AuthUser` extractor that guards every route of an organization's data.
//!
//! A token names the user (`sub`) and the organization (`org`). Every request it authorises
//! also checks, in Postgres, that the user is still an open member of that organization:
//! a removed member's token stops working at once, not when it expires.

use crate::{error::ApiError, state::AppState};
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use axum::{
    extract::FromRequestParts,
    http::{request::Parts, HeaderMap, StatusCode},
};
use bulk_import_core::accounts::{self, OrgId, Role};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use uuid::Uuid;

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 128;

/// A weak password is refused at sign-up: shorter than 8 characters, longer than 128, or
/// made of letters only or digits only.
pub fn check_password_strength(password: &str) -> Result<(), &'static str> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err("password must be at least 8 characters long");
    }
    if len > MAX_PASSWORD_LEN {
        return Err("password must be at most 128 characters long");
    }
    let letters = password.chars().any(char::is_alphabetic);
    let others = password.chars().any(|c| !c.is_alphabetic());
    if !(letters && others) {
        return Err("password must mix letters with digits or symbols");
    }
    Ok(())
}

/// Password hashing with bounded concurrency and memory (docs/reliability.md, Abuse).
///
/// argon2id with the OWASP parameters (m = 19 MiB, t = 2, p = 1: `argon2`'s defaults, also
/// those of the dummy hash below). Each hash needs 19 MiB for its duration, so at most
/// `HASH_CONCURRENCY` run at once; a request that waits longer than
/// `HASH_QUEUE_TIMEOUT_SECONDS` for a slot gets 503 `server_busy` with `Retry-After`. The
/// memory is given back after each hash: `main` fixes glibc's mmap threshold (1 MiB), so a
/// hash's blocks are mapped for it and unmapped when it ends instead of staying in the
/// allocator's arenas after a burst (measured in `api/tests/it/abuse.rs`). A slot is held until
/// the hash finishes even if the client goes away.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Hasher {
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_timeout,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit =
            match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    let mut e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_busy",
                        "too many sign-ups and logins at once; try again shortly",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                }
            };
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(ApiError::internal)
    }

    /// Hashes on a blocking thread: argon2 is deliberately slow.
    pub async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(ApiError::internal)
    }

    /// Verifies against `hash`; with `None` (unknown user) verifies against a fixed dummy
    /// hash so that the answer takes as long and says nothing about which emails exist.
    pub async fn verify_password(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vd3O2rN0ucLG2OQqvCqnDWq2y9AP5yUyvETiLNS2X3A";
        let known = hash.is_some();
        self.run(move || {
            let hash = hash.unwrap_or_else(|| DUMMY.to_string());
            // An account without a usable password (`!`: made by `importer submit`) is
            // checked against the dummy too, and never matches.
            let usable = PasswordHash::new(&hash).is_ok();
            let hash = if usable { hash } else { DUMMY.to_string() };
            let parsed = PasswordHash::new(&hash).map_err(ApiError::internal)?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
                && known
                && usable)
        })
        .await?
    }
}

/// Name of the device cookie set by a successful login (see `rate_limit`).
pub const DEVICE_COOKIE: &str = "bi_device";
const DEVICE_AUDIENCE: &str = "bulk-import-device";

#[derive(Debug, Serialize, Deserialize)]
struct DeviceClaims {
    /// The account's email hash.
    sub: String,
    /// The device id: the limiter's counter for this cookie.
    jti: String,
    aud: String,
    exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The organization the token was issued for.
    pub org: OrgId,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct Tokens {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub ttl: Duration,
    device_ttl: Duration,
}

impl Tokens {
    pub fn new(settings: &bulk_import_core::Settings) -> Tokens {
        let alg = match settings.jwt_alg.as_str() {
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            _ => Algorithm::HS256,
        };
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        Tokens {
            alg,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: settings.jwt_ttl,
            device_ttl: settings.limits.device_cookie_ttl,
        }
    }

    pub fn issue(&self, user_id: Uuid, org: OrgId) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            org,
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
        };
        encode(&Header::new(self.alg), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// The verified claims of a token: its user, organization and expiry. Only the
    /// configured algorithm is accepted (so `none` and algorithm confusion fail), the
    /// signature must match and `exp` must be in the future (no leeway). Tokens without an
    /// organization (issued before organizations existed) are refused.
    pub fn verify(&self, token: &str) -> Option<TokenClaims> {
        let mut validation = Validation::new(self.alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        let data = decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some(TokenClaims {
            user: data.claims.sub.parse().ok()?,
            org: data.claims.org,
            expires_at: data.claims.exp,
        })
    }

    /// A device cookie for the account whose email hashes to `email_hash`: the
    /// `Set-Cookie` value (HttpOnly, SameSite=Strict, only sent to `/auth/token`; `Secure`
    /// when `secure`).
    pub fn device_cookie(&self, email_hash: &str, secure: bool) -> Result<String, ApiError> {
        let claims = DeviceClaims {
            sub: email_hash.to_string(),
            jti: Uuid::new_v4().simple().to_string(),
            aud: DEVICE_AUDIENCE.into(),
            exp: chrono::Utc::now().timestamp() + self.device_ttl.as_secs() as i64,
        };
        let value =
            encode(&Header::new(self.alg), &claims, &self.encoding).map_err(ApiError::internal)?;
        Ok(format!(
            "{DEVICE_COOKIE}={value}; Max-Age={}; Path=/auth/token; HttpOnly; SameSite=Strict{}",
            self.device_ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        ))
    }

    /// The device id of a valid device cookie in `headers` issued for `email_hash`.
    pub fn device_id(&self, headers: &HeaderMap, email_hash: &str) -> Option<String> {
        let mut validation = Validation::new(self.alg);
        validation.leeway = 0;
        validation.set_audience(&[DEVICE_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(DEVICE_COOKIE)?.strip_prefix('='))
            .filter_map(|value| decode::<DeviceClaims>(value, &self.decoding, &validation).ok())
            .find(|d| d.claims.sub == email_hash)
            .map(|d| d.claims.jti)
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy)]
pub struct TokenClaims {
    pub user: Uuid,
    pub org: OrgId,
    pub expires_at: i64,
}

/// The authenticated caller, from `Authorization: Bearer <token>`: an open member of the
/// token's organization, with the role it holds now.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
    pub org: OrgId,
    pub role: Role,
}

/// The authenticated caller and when its token expires (unix seconds): for responses that
/// outlive the request, such as event streams, which must end with the token.
#[derive(Debug, Clone, Copy)]
pub struct AuthSession {
    pub user: AuthUser,
    pub expires_at: i64,
}

fn token_claims(parts: &Parts, state: &AppState) -> Result<TokenClaims, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid bearer token"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    state
        .tokens
        .verify(token.trim())
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
}

/// The member a token's claims name, if the account is still open and in that organization.
pub async fn current_member(state: &AppState, claims: &TokenClaims) -> Result<AuthUser, ApiError> {
    match accounts::membership(&state.pool, claims.user).await? {
        Some((org, role)) if org == claims.org => Ok(AuthUser {
            id: claims.user,
            org,
            role,
        }),
        _ => Err(ApiError::unauthorized(
            "this account is no longer a member of the token's organization",
        )),
    }
}

async fn session(parts: &Parts, state: &AppState) -> Result<AuthSession, ApiError> {
    let claims = token_claims(parts, state)?;
    Ok(AuthSession {
        user: current_member(state, &claims).await?,
        expires_at: claims.expires_at,
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        session(parts, state).await.map(|s| s.user)
    }
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        session(parts, state).await
    }
}

impl AuthUser {
    /// 403 unless the caller is an owner or admin of its organization.
    pub fn must_manage(&self) -> Result<(), ApiError> {
        if self.role.manages() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the organization's owner and admins may do this",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(check_password_strength("pass12345").is_ok());
        assert!(check_password_strength("short1").is_err());
        assert!(check_password_strength("onlyletters").is_err());
        assert!(check_password_strength("1234567890").is_err());
        assert!(check_password_strength(&"a1".repeat(65)).is_err());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(1, Duration::from_secs(60));
        let hash = h.hash_password("pass12345".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify_password("pass12345".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!h
            .verify_password("wrong-pass1".into(), Some(hash))
            .await
            .unwrap());
        assert!(!h.verify_password("pass12345".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_hashing_queue_answers_503_after_its_deadline() {
        let h = Hasher::new(1, Duration::from_millis(50));
        let held = h.permits.clone().acquire_owned().await.unwrap();
        let e = h.run(|| ()).await.unwrap_err();
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "server_busy", Some(1))
        );
        drop(held);
        assert!(h.run(|| ()).await.is_ok());
    }
}
