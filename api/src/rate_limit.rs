//! Failed-login limiting in Redis, per email and per client address, over a sliding window.
//! When Redis is down the limiter fails open (logins keep working, unlimited) and says so in
//! the logs: refusing every login because the cache is down would lock all users out.

use redis::aio::MultiplexedConnection;
use std::time::Duration;

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_EMAIL: i64 = 5;
pub const MAX_PER_ADDR: i64 = 20;
const TIMEOUT: Duration = Duration::from_millis(500);

fn keys(prefix: &str, email: &str, addr: &str) -> [(String, i64); 2] {
    [
        (
            format!("{prefix}login-failures:email:{email}"),
            MAX_PER_EMAIL,
        ),
        (format!("{prefix}login-failures:addr:{addr}"), MAX_PER_ADDR),
    ]
}

/// Seconds until the caller may try again, if either counter is at its limit.
pub async fn blocked_for(
    prefix: &str,
    conn: Option<MultiplexedConnection>,
    email: &str,
    addr: &str,
) -> Option<u64> {
    let mut conn = conn?;
    for (key, max) in keys(prefix, email, addr) {
        let mut pipe = redis::pipe();
        pipe.get(&key).ttl(&key);
        match tokio::time::timeout(TIMEOUT, pipe.query_async::<(Option<i64>, i64)>(&mut conn)).await
        {
            Ok(Ok((Some(count), ttl))) if count >= max => return Some(ttl.max(1) as u64),
            Ok(Ok(_)) => {}
            _ => {
                tracing::warn!("redis unavailable: login rate limiting is off (fails open)");
                return None;
            }
        }
    }
    None
}

pub async fn record_failure(
    prefix: &str,
    conn: Option<MultiplexedConnection>,
    email: &str,
    addr: &str,
) {
    let Some(mut conn) = conn else { return };
    let mut pipe = redis::pipe();
    for (key, _) in keys(prefix, email, addr) {
        // The window starts at the first failure.
        pipe.incr(&key, 1)
            .ignore()
            .expire(&key, WINDOW.as_secs() as i64)
            .arg("NX")
            .ignore();
    }
    let _ = tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
}

pub async fn reset(prefix: &str, conn: Option<MultiplexedConnection>, email: &str) {
    let Some(mut conn) = conn else { return };
    let key = format!("{prefix}login-failures:email:{email}");
    let _ = tokio::time::timeout(
        TIMEOUT,
        redis::cmd("DEL").arg(key).query_async::<()>(&mut conn),
    )
    .await;
}
