//! upsert: one `INSERT … SELECT FROM unnest(…) ON CONFLICT (org_id, email) DO UPDATE` per
//! batch. The batch's repeats were collapsed to their last occurrence by `Batch::prepare`;
//! the earlier ones count as updates, exactly as if each row had been applied in file order.

use crate::batch::Batch;
use sqlx::PgConnection;
use uuid::Uuid;

/// Writes the batch's rows; returns how many were inserted (the other valid rows of the
/// batch, `Batch::valid_rows`, are updates).
pub(super) async fn upsert_rows(
    tx: &mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    batch: &Batch,
) -> Result<i64, sqlx::Error> {
    let rows = &batch.rows;
    if rows.is_empty() {
        return Ok(0);
    }
    let emails: Vec<&str> = rows.iter().map(|c| c.email()).collect();
    let column = |i: usize| -> Vec<Option<&str>> { rows.iter().map(|c| c.field(i)).collect() };
    let lines: Vec<i64> = rows.iter().map(|c| c.line).collect();
    sqlx::query_scalar(
        "WITH up AS ( \
           INSERT INTO customers AS c (org_id, email, first_name, last_name, phone, city, last_import_id, last_import_line) \
           SELECT $8, e, f, l, p, ci, $7, ln \
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) AS s(e, f, l, p, ci, ln) \
           ON CONFLICT (org_id, email) DO UPDATE SET first_name = EXCLUDED.first_name, \
             last_name = EXCLUDED.last_name, phone = EXCLUDED.phone, city = EXCLUDED.city, \
             updated_at = now(), last_import_id = EXCLUDED.last_import_id, \
             last_import_line = EXCLUDED.last_import_line \
           RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted) FROM up",
    )
    .bind(&emails)
    .bind(column(0))
    .bind(column(1))
    .bind(column(2))
    .bind(column(3))
    .bind(&lines)
    .bind(job_id)
    .bind(org_id)
    .fetch_one(tx)
    .await
}
