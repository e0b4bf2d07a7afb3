//! Database connection and the embedded migrations (`migrations/` at the repository root).

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use std::{str::FromStr, time::Duration};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connection options for every Postgres connection the binaries open: the server ends a
/// statement after `statement_timeout` and a transaction left idle after the same time (so a
/// stalled client cannot hold row locks), and probes the client's socket with TCP
/// keepalives and a user timeout (so a vanished client's session, its locks and its
/// advisory lock go away within about a minute). The client side cannot set keepalives
/// through sqlx: callers bound their own waits (`with_timeout`).
pub fn connect_options(
    url: &str,
    application_name: &str,
    statement_timeout: Duration,
) -> Result<PgConnectOptions, sqlx::Error> {
    let ms = statement_timeout.as_millis().max(1).to_string();
    Ok(PgConnectOptions::from_str(url)?
        .application_name(application_name)
        .options([
            ("statement_timeout", ms.as_str()),
            ("idle_in_transaction_session_timeout", ms.as_str()),
            ("tcp_keepalives_idle", "15"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "30000"),
        ]))
}

/// How long a pooled connection may take to answer a ping before it is dropped.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The statement timeout when none is configured (`DB_STATEMENT_TIMEOUT_SECONDS`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A pool on `url` with the options of `connect_options` and the default statement timeout.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, DEFAULT_STATEMENT_TIMEOUT).await
}

/// A pool on `url` with the options of `connect_options`.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(url, "bulk-import", statement_timeout)?;
    pool_options(max_connections).connect_with(options).await
}

/// Pool settings shared by the binaries: an idle connection is pinged, with a bound, before
/// it is handed out, and dropped when the ping does not come back (a half-open connection
/// would otherwise be handed out again and again).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Connection;
                Ok(tokio::time::timeout(PING_TIMEOUT, conn.ping())
                    .await
                    .is_ok_and(|pinged| pinged.is_ok()))
            })
        })
}

/// Bounds a database call on the client side: a half-open connection (the peer gone without
/// a FIN) would otherwise wait for ever. A timeout is reported as an I/O error, which is
/// transient; the connection it happened on must not be used again.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(limit)),
    }
}

/// The error of a database call given up after `limit` (an I/O error: transient).
pub fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from the database within {limit:?}"),
    ))
}

/// Whether an error is worth retrying: the connection or the server went away, or the
/// server is starting up or shutting down. Constraint and data errors are not.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P0x: admin/crash shutdown, cannot connect now;
            // 40001/40P01: serialization failure, deadlock; 53: insufficient resources;
            // 57014: statement timeout (or a cancel), 55P03: lock timeout — both typically a
            // wait on a session that is gone or stalled, which the server ends in time.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
                || code == "57014"
                || code == "55P03"
        }),
        _ => false,
    }
}

/// SQLSTATE of a database error, if it is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}
