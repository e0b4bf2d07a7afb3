//! Passwords (argon2id) and access tokens (JWT, HS256/384/512 as `JWT_ALG` says), and the
//! `AuthUser` extractor that guards the import routes.

use crate::{error::ApiError, state::AppState};
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::time::Duration;
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

/// Hashes on a blocking thread: argon2 is deliberately slow.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Verifies against `hash`; with `None` (unknown user) verifies against a fixed dummy hash so
/// that the answer takes as long and says nothing about which emails exist.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vd3O2rN0ucLG2OQqvCqnDWq2y9AP5yUyvETiLNS2X3A";
    let known = hash.is_some();
    tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| DUMMY.to_string());
        let parsed = PasswordHash::new(&hash).map_err(ApiError::internal)?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && known)
    })
    .await
    .map_err(ApiError::internal)?
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct Tokens {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub ttl: Duration,
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
        }
    }

    pub fn issue(&self, user_id: Uuid) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
        };
        encode(&Header::new(self.alg), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Only the configured algorithm is accepted (so `none` and algorithm confusion fail),
    /// the signature must match and `exp` must be in the future (no leeway).
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let mut validation = Validation::new(self.alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        let data = decode::<Claims>(token, &self.decoding, &validation).ok()?;
        data.claims.sub.parse().ok()
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
            .map(AuthUser)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
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
        let hash = hash_password("pass12345".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("pass12345".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify_password("wrong-pass1".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify_password("pass12345".into(), None).await.unwrap());
    }
}
