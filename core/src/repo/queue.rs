//! The queue position of a `pending` job waiting for an importer slot (`crate::admission`):
//! written by whoever admits imports (the operator, the local executor), read by the API.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Sets (or with `None` clears) the queue position of a `pending` job; a job in any other
/// status is left alone. True when the row changed.
pub async fn set_queue_position(
    db: impl PgExecutor<'_>,
    id: Uuid,
    position: Option<i32>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE import_jobs SET queue_position = $2 \
         WHERE id = $1 AND status = 'pending' AND queue_position IS DISTINCT FROM $2",
        id,
        position
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
