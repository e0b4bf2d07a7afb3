//! A job's bad rows as JSON pages (`GET /imports/{id}/errors?format=json`), for pages and
//! scripts that show them rather than download a file: keyset pagination by line over what the
//! importer stored in `import_errors` (at most `MAX_STORED_ERROR_ROWS` per job; the rest are
//! counted in `error_rows` only, docs/import-semantics.md). Rows committed so far are visible
//! while the job runs.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One bad row: where it is in the file, why it was refused, and its values as read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorRow {
    /// The row's 1-based line in the file (the header is line 1).
    pub line: i64,
    /// Stable code, e.g. `invalid_email`, `duplicate_in_file`, `duplicate_in_db`.
    pub code: String,
    pub message: String,
    /// The five columns as read (absent ones null).
    pub values: RowValues,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowValues {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorRowPage {
    pub items: Vec<ErrorRow>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_after: Option<i64>,
    /// The job's `error_rows` counter (may exceed the rows stored, see the module docs).
    pub error_rows: i64,
}

/// One `import_errors` row as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    line: i64,
    code: String,
    message: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    city: Option<String>,
}

/// Up to `limit` bad rows of `job_id` after line `after`, by line (the primary key's order).
pub async fn page(
    pool: &PgPool,
    job_id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<ErrorRow>> {
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT line, code, message, email, first_name, last_name, phone, city
         FROM import_errors WHERE job_id = $1 AND line > $2 ORDER BY line LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ErrorRow {
            line: r.line,
            code: r.code,
            message: r.message,
            values: RowValues {
                email: r.email,
                first_name: r.first_name,
                last_name: r.last_name,
                phone: r.phone,
                city: r.city,
            },
        })
        .collect())
}
