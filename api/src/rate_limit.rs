//! Login and registration limiting in Redis (docs/api.md, login limiting).
//!
//! **Logins.** Every attempt is counted *before* the password is checked, atomically (one
//! Lua script), so guesses sent together are limited like guesses sent one after another:
//! - per email: at most `LOGIN_MAX_PER_EMAIL` attempts per `LOGIN_WINDOW_SECONDS` from
//!   clients without that account's device cookie; a successful login resets the count;
//! - per client address (`client_ip`, trusted proxy headers only): at most
//!   `LOGIN_MAX_EMAILS_PER_ADDR` *distinct emails* with unsuccessful attempts per window.
//!   Hammering one account from an address therefore never blocks the address — other users
//!   behind the same NAT or ingress keep logging in — while spraying many accounts from it
//!   does, for clients without a device cookie;
//! - device cookies (OWASP "device cookies"): a successful login sets a signed, HttpOnly
//!   cookie bound to the account (its email's hash). An attempt that presents a valid one for
//!   the email it tries is counted against that cookie only (same per-email maximum) and
//!   passes the email and address limits, so a locked-out account or a blocked address does
//!   not stop a user on a device that logged in before.
//!
//! **Registrations**: at most `REGISTER_MAX_PER_ADDR` per client address per
//! `REGISTER_WINDOW_SECONDS`, counted before the (slow, memory-hungry) password hash.
//!
//! Keys are `{REDIS_KEY_PREFIX}login:email:<sha256(email)>`, `…login:addr:<net>`,
//! `…login:device:<id>`, `…register:addr:<net>`, where `<net>` is the client's
//! [`limit_key`](crate::client_ip::limit_key) (an IPv4 address, an IPv6 /64): an email never
//! becomes a key as such. Windows
//! start at the first attempt and are set with plain `EXPIRE` when a key has no TTL (no
//! `EXPIRE … NX`), so this works on Redis 6 and 7. When Redis is down the limiter fails open
//! (logins and registrations keep working, unlimited) and says so in the logs: refusing
//! every login because the cache is down would lock all users out.

use crate::{client_ip::limit_key, state::AppState};
use sha2::{Digest, Sha256};
use std::{net::IpAddr, sync::LazyLock};

static LOGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local window = tonumber(ARGV[1])
local function expire_new(key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
local function wait(key)
  local t = redis.call('TTL', key)
  if t < 1 then return 1 end
  return t
end
if KEYS[2] then
  if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0
     and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    return wait(KEYS[2])
  end
end
local n = redis.call('INCR', KEYS[1])
expire_new(KEYS[1])
if n > tonumber(ARGV[2]) then return wait(KEYS[1]) end
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[3])
  expire_new(KEYS[2])
end
return 0
",
    )
});

static LOGIN_OK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
",
    )
});

static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
if n > tonumber(ARGV[2]) then
  local t = redis.call('TTL', KEYS[1])
  if t < 1 then return 1 end
  return t
end
return 0
",
    )
});

/// The hex SHA-256 of a (normalised) email: what limiter keys and device cookies hold.
pub fn email_hash(email: &str) -> String {
    hex::encode(Sha256::digest(email.as_bytes()))
}

/// Who is attempting a login, as the limiter counts it.
pub struct LoginAttempt {
    counter: String,
    addr_set: Option<String>,
    email_hash: String,
}

impl LoginAttempt {
    /// `device`: the id of a valid device cookie for this email, if the client sent one.
    pub fn new(prefix: &str, email_hash: &str, addr: IpAddr, device: Option<&str>) -> Self {
        match device {
            Some(id) => LoginAttempt {
                counter: format!("{prefix}login:device:{id}"),
                addr_set: None,
                email_hash: email_hash.to_string(),
            },
            None => LoginAttempt {
                counter: format!("{prefix}login:email:{email_hash}"),
                addr_set: Some(format!("{prefix}login:addr:{}", limit_key(addr))),
                email_hash: email_hash.to_string(),
            },
        }
    }
}

async fn run(state: &AppState, invocation: redis::ScriptInvocation<'_>) -> Option<u64> {
    let mut conn = state.redis_conn().await?;
    match invocation.invoke_async::<u64>(&mut conn).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "redis unavailable: limiting is off (fails open)");
            state.shared_redis.broken().await;
            None
        }
    }
}

/// Counts the attempt; `Some(seconds)` when it is over a limit (answer 429).
pub async fn login_attempt(state: &AppState, a: &LoginAttempt) -> Option<u64> {
    let l = &state.settings.limits;
    let mut inv = LOGIN.prepare_invoke();
    inv.key(&a.counter);
    if let Some(set) = &a.addr_set {
        inv.key(set);
    }
    inv.arg(l.login_window.as_secs())
        .arg(l.login_max_per_email)
        .arg(&a.email_hash)
        .arg(l.login_max_emails_per_addr);
    run(state, inv).await.filter(|&secs| secs > 0)
}

/// A successful login: its counter is reset and its email leaves the address's set.
pub async fn login_succeeded(state: &AppState, a: &LoginAttempt) {
    let mut inv = LOGIN_OK.prepare_invoke();
    inv.key(&a.counter);
    if let Some(set) = &a.addr_set {
        inv.key(set);
    }
    inv.arg(&a.email_hash);
    run(state, inv).await;
}

/// Counts a registration from `addr`; `Some(seconds)` when over the limit.
pub async fn register_attempt(state: &AppState, addr: IpAddr) -> Option<u64> {
    let l = &state.settings.limits;
    let mut inv = REGISTER.prepare_invoke();
    inv.key(format!(
        "{}register:addr:{}",
        state.settings.redis_key_prefix,
        limit_key(addr)
    ))
    .arg(l.register_window.as_secs())
    .arg(l.register_max_per_addr);
    run(state, inv).await.filter(|&secs| secs > 0)
}
