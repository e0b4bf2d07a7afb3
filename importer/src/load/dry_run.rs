//! Dry runs (`dry_run=true`): every batch goes through the same checks and the same
//! transaction as in a real run — error rows, counters and checkpoint are committed, so a
//! dry run is resumable and its errors.csv is built the same way — but no customer row is
//! written. In its place, each email the real run would have written is recorded in
//! `import_dry_run_rows` (with its line), so that later batches see the job's own rows
//! exactly as the real run sees them in `customers`: `duplicate_in_file` naming the first
//! line, and upsert's inserted/updated split. Rows in `customers` are only read, so they
//! are `duplicate_in_db` (insert_only) or updates (upsert), as in the real run. The rows are
//! deleted when the job ends ([`forget`]).
//!
//! What a dry run reports is what a real run started at the same moment would report, as
//! long as nothing else writes the same emails in between.

use crate::{
    batch::Batch,
    validate::{Customer, RowError},
};
use bulk_import_core::ImportMode;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;
use uuid::Uuid;

/// The batch's row work in a dry run, as the real run's: its errors (the reader's too), and
/// how many rows would be inserted and updated. Records the emails that would be written.
pub(super) async fn record_rows(
    tx: &mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    mode: ImportMode,
    batch: &Batch,
) -> Result<(Vec<RowError>, i64, i64), sqlx::Error> {
    let known = known_emails(tx, (job_id, org_id), batch).await?;
    let mut errors = batch.errors.clone();
    let written: Vec<&Customer>;
    let (inserted, updated);
    match mode {
        ImportMode::InsertOnly => {
            written = insert_only(batch, &known, &mut errors);
            inserted = written.len() as i64;
            updated = 0;
        }
        ImportMode::Upsert => {
            let new = batch
                .rows
                .iter()
                .filter(|c| !known.contains_key(c.email()))
                .count() as i64;
            inserted = new;
            updated = batch.valid_rows() as i64 - new;
            written = batch.rows.iter().collect();
        }
    }
    remember(tx, job_id, &written).await?;
    Ok((errors, inserted, updated))
}

/// Where each email of the batch already is: `None` = in the organization's customers
/// (before the job), `Some(line)` = written by this dry run at that line.
async fn known_emails(
    tx: &mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    batch: &Batch,
) -> Result<HashMap<String, Option<i64>>, sqlx::Error> {
    let emails: Vec<&str> = batch.rows.iter().map(|c| c.email()).collect();
    let mut known: HashMap<String, Option<i64>> = sqlx::query_as::<_, (String,)>(
        "SELECT email FROM customers WHERE org_id = $2 AND email = ANY($1)",
    )
    .bind(&emails)
    .bind(org_id)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(e,)| (e, None))
    .collect();
    let mine: Vec<(String, i64)> = sqlx::query_as(
        "SELECT email, line FROM import_dry_run_rows WHERE job_id = $1 AND email = ANY($2)",
    )
    .bind(job_id)
    .bind(&emails)
    .fetch_all(&mut *tx)
    .await?;
    for (email, line) in mine {
        known.entry(email).or_insert(Some(line));
    }
    Ok(known)
}

/// insert_only: the rows that would be inserted; the others' errors pushed onto `errors`.
fn insert_only<'b>(
    batch: &'b Batch,
    known: &HashMap<String, Option<i64>>,
    errors: &mut Vec<RowError>,
) -> Vec<&'b Customer> {
    let mut keep = vec![];
    for c in &batch.rows {
        match known.get(c.email()) {
            None => keep.push(c),
            Some(found) => errors.push(duplicate(c, *found)),
        }
    }
    for (c, first) in batch.repeats() {
        errors.push(match known.get(c.email()) {
            Some(found) => duplicate(c, *found),
            None => duplicate(c, Some(*first)),
        });
    }
    keep
}

/// Records the emails the real run would have written, with their lines.
async fn remember(
    tx: &mut PgConnection,
    job_id: Uuid,
    written: &[&Customer],
) -> Result<(), sqlx::Error> {
    if written.is_empty() {
        return Ok(());
    }
    let emails: Vec<&str> = written.iter().map(|c| c.email()).collect();
    let lines: Vec<i64> = written.iter().map(|c| c.line).collect();
    sqlx::query(
        "INSERT INTO import_dry_run_rows (job_id, email, line) \
         SELECT $1, e, l FROM unnest($2::text[], $3::int8[]) AS s(e, l) \
         ON CONFLICT (job_id, email) DO NOTHING",
    )
    .bind(job_id)
    .bind(&emails)
    .bind(&lines)
    .execute(tx)
    .await?;
    Ok(())
}

fn duplicate(c: &Customer, first: Option<i64>) -> RowError {
    match first {
        Some(line) => RowError::duplicate_in_file(c, line),
        None => RowError::duplicate_in_db(c),
    }
}

/// Drops the dry run's bookkeeping once the job has ended.
pub async fn forget(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM import_dry_run_rows WHERE job_id = $1")
        .bind(job_id)
        .execute(db)
        .await?;
    Ok(())
}
