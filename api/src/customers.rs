//! Reading an organization's customers back (docs/organizations.md): keyset pages by
//! email, one customer with the import and line that last wrote it, and a streamed CSV
//! export. Every statement names the organization first, as the table's key does.

use bulk_import_core::accounts::OrgId;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Customer {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CustomerDetail {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub customer: Customer,
    /// The import that last wrote the row (it may have been deleted since).
    pub last_import_id: Option<Uuid>,
    /// The line of that import's file.
    pub last_import_line: Option<i64>,
}

/// `LIKE` pattern of the emails that start with `prefix` (its wildcards escaped).
fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Up to `limit` customers of `org` by email, after `after` (exclusive), whose email starts
/// with `prefix`. The email column compares bytewise (`COLLATE "C"`), so both the keyset and
/// the prefix are ranges of the primary key.
pub async fn page(
    db: impl PgExecutor<'_>,
    org: OrgId,
    after: Option<&str>,
    prefix: Option<&str>,
    limit: i64,
) -> Result<Vec<Customer>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, first_name, last_name, phone, city, created_at, updated_at \
         FROM customers \
         WHERE org_id = $1 AND ($2::text IS NULL OR email > $2) \
           AND ($3::text IS NULL OR email LIKE $3) \
         ORDER BY email LIMIT $4",
    )
    .bind(org)
    .bind(after)
    .bind(prefix.map(prefix_pattern))
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    org: OrgId,
    email: &str,
) -> Result<Option<CustomerDetail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, first_name, last_name, phone, city, created_at, updated_at, \
           last_import_id, last_import_line \
         FROM customers WHERE org_id = $1 AND email = $2",
    )
    .bind(org)
    .bind(email)
    .fetch_optional(db)
    .await
}

/// How long one export may stream before the server ends it.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Streams every customer of `org` as CSV (the five standard columns, by email), from a
/// `COPY … TO STDOUT` on a connection of its own. At most a few chunks are buffered: the
/// copy waits while the client does not read, and ends when the client goes away or after
/// `EXPORT_TIMEOUT`. `permit` (the exports quota) is held until the copy ends.
///
/// The first item is an error when the copy cannot start; the caller checks it before
/// answering 200.
pub fn export(
    pool: PgPool,
    org: OrgId,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<Result<Bytes, sqlx::Error>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _permit = permit;
        let copied = async {
            let mut conn = pool.acquire().await?;
            // Its statement timeout is raised for the export: it leaves the pool with it.
            conn.close_on_drop();
            sqlx::query(&format!(
                "SET statement_timeout = '{}s'",
                EXPORT_TIMEOUT.as_secs()
            ))
            .execute(&mut *conn)
            .await?;
            // `org` is an integer: nothing a client wrote reaches the statement.
            let sql = format!(
                "COPY (SELECT email, first_name, last_name, phone, city FROM customers \
                   WHERE org_id = {org} ORDER BY email) \
                 TO STDOUT WITH (FORMAT csv, HEADER true, FORCE_QUOTE *)"
            );
            let mut stream = conn.copy_out_raw(&sql).await?;
            while let Some(chunk) = stream.next().await {
                if tx.send(chunk).await.is_err() {
                    // The client went away: dropping the stream and the connection ends the
                    // copy.
                    return Ok(());
                }
            }
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = copied.await {
            tracing::warn!(org_id = org, error = %e, "customer export failed");
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_escape_like_wildcards() {
        assert_eq!(prefix_pattern("ann"), "ann%");
        assert_eq!(prefix_pattern("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
