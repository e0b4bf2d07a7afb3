//! insert_only: the first occurrence of an email is inserted. A later occurrence in the
//! same batch is caught in memory (`Batch::prepare` sets it aside); one in an earlier batch
//! is found in the table, where `last_import_id` tells this job's rows (duplicate_in_file,
//! naming the first line) from rows that were there before (duplicate_in_db), or, for the
//! batch right before when it is still in flight, told by that batch: it hands over its
//! rows' **fates** before it commits ([`InsertOnly::classify`]). Rows are COPied straight
//! into `customers`; only the emails that may exist are looked up first.

use super::error::StageError;
use crate::{
    batch::Batch,
    copy,
    validate::{Customer, RowError},
};
use bulk_import_core::db;
use foldhash::HashMap;
use sqlx::{PgConnection, Row};
use std::sync::Arc;
use uuid::Uuid;

const UNIQUE_VIOLATION: &str = "23505";

/// Why a row of a batch was not inserted — which is also what a later row with its email
/// is. A row that was inserted is `InFile(its own line)` to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// The email was loaded by this job from this line.
    InFile(i64),
    /// The email was in the table before the job.
    InDb,
}

impl Fate {
    /// What a row found in the table (`lookup`) is.
    fn found(job_id: Uuid, (job, line): &(Option<Uuid>, Option<i64>)) -> Fate {
        match (job, line) {
            (Some(job), Some(line)) if *job == job_id => Fate::InFile(*line),
            _ => Fate::InDb,
        }
    }

    fn error(self, c: &Customer) -> RowError {
        match self {
            Fate::InFile(line) => RowError::duplicate_in_file(c, line),
            Fate::InDb => RowError::duplicate_in_db(c),
        }
    }
}

/// The fates (`InsertOnly::fates`) a batch hands to the one after it.
pub(super) type Fates = Arc<Vec<(u32, Fate)>>;

/// What became of row `i` of a batch: inserted (from its line), or its recorded fate.
fn fate_of(rows: &[Customer], fates: &[(u32, Fate)], i: usize) -> Fate {
    match fates.binary_search_by_key(&(i as u32), |&(j, _)| j) {
        Ok(k) => fates[k].1,
        Err(_) => Fate::InFile(rows[i].line),
    }
}

/// A batch's insert_only row work, once its rows are COPied: what is left to classify.
pub(super) struct InsertOnly<'b> {
    batch: &'b Batch,
    /// A batch applied beside the one before it: rows whose email that one also has,
    /// `(index here, index there)`. Not looked up: they are what that batch makes of the
    /// same email (`classify`).
    later: Vec<(usize, usize)>,
    /// The rows not inserted, by index, and why (sorted by `classify`).
    fates: Vec<(u32, Fate)>,
    pub(super) inserted: i64,
}

impl InsertOnly<'_> {
    /// Turns the rows set aside (`later`) and the batch's repeats into errors (pushed onto
    /// `errors`). A set-aside row is what the batch before made of the same email
    /// (`before`: its rows and fates) — a repeat of the line that batch loaded it from, or
    /// of whatever that line repeated — exactly as if this batch were applied after it; a
    /// repeat is what its first occurrence is.
    pub(super) fn classify(
        &mut self,
        before: Option<(&Batch, &[(u32, Fate)])>,
        errors: &mut Vec<RowError>,
    ) {
        let batch = self.batch;
        if let Some((before, theirs)) = before {
            for &(i, j) in &self.later {
                let fate = fate_of(&before.rows, theirs, j);
                errors.push(fate.error(&batch.rows[i]));
                self.fates.push((i as u32, fate));
            }
        }
        self.fates.sort_unstable_by_key(|&(i, _)| i);
        for ((c, _), &first) in batch.repeats().iter().zip(&batch.repeat_of) {
            let fate = fate_of(&batch.rows, &self.fates, first as usize);
            errors.push(fate.error(c));
        }
    }

    /// The fates, for the batch after this one (after `classify`).
    pub(super) fn take_fates(&mut self) -> Fates {
        Arc::new(std::mem::take(&mut self.fates))
    }
}

/// COPies the batch's rows into `customers`, but those set aside (`later`) and those of
/// `candidates` (indices into `batch.rows`, the emails that may exist) found in the table.
/// Returns the work left to classify and the errors of the rows found.
pub(super) async fn copy_rows<'b>(
    tx: &mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    batch: &'b Batch,
    candidates: &[usize],
    later: Vec<(usize, usize)>,
) -> Result<(InsertOnly<'b>, Vec<RowError>), StageError> {
    // Rows not inserted: set aside, or found in the table.
    let mut skip = vec![false; batch.rows.len()];
    for &(i, _) in &later {
        skip[i] = true;
    }
    let candidates: Vec<usize> = candidates.iter().copied().filter(|&i| !skip[i]).collect();
    let fates = if candidates.is_empty() {
        Vec::new()
    } else {
        lookup(tx, (job_id, org_id), &batch.rows, &candidates).await?
    };
    let mut errors = Vec::with_capacity(fates.len());
    for &(i, fate) in &fates {
        skip[i as usize] = true;
        errors.push(fate.error(&batch.rows[i as usize]));
    }
    let inserted = batch.rows.len() - later.len() - fates.len();
    // The reader encoded every row; when some are not inserted, the others' tuples are
    // copied out.
    if inserted == batch.rows.len() {
        copy_in(tx, &batch.copy_data).await?;
    } else if inserted > 0 {
        let mut tuples = Vec::with_capacity(batch.copy_data.len());
        for i in (0..batch.rows.len()).filter(|&i| !skip[i]) {
            tuples.extend_from_slice(batch.copy_row(i));
        }
        copy_in(tx, &tuples).await?;
    }
    let work = InsertOnly {
        batch,
        later,
        fates,
        inserted: inserted as i64,
    };
    Ok((work, errors))
}

/// One binary COPY of `tuples` (nothing when there are none); an email already in the
/// table is `StageError::Existing`.
async fn copy_in(tx: &mut PgConnection, tuples: &[u8]) -> Result<(), StageError> {
    if tuples.is_empty() {
        return Ok(());
    }
    let mut sink = tx
        .copy_in_raw(
            "COPY customers (org_id, email, first_name, last_name, phone, city, last_import_id, last_import_line) FROM STDIN (FORMAT binary)",
        )
        .await?;
    sink.send(copy::BINARY_HEADER).await?;
    sink.send(tuples).await?;
    sink.send(copy::BINARY_TRAILER).await?;
    match sink.finish().await {
        Ok(_) => Ok(()),
        Err(e) if db::sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            Err(StageError::Existing)
        }
        Err(e) => Err(e.into()),
    }
}

/// The rows among `rows[i]`, `i` in `candidates`, whose email is in the table, and what
/// each is (`Fate::found`), by index.
async fn lookup(
    conn: &mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    rows: &[Customer],
    candidates: &[usize],
) -> Result<Vec<(u32, Fate)>, sqlx::Error> {
    let emails: Vec<&str> = candidates.iter().map(|&i| rows[i].email()).collect();
    let found = sqlx::query(
        "SELECT email, last_import_id, last_import_line FROM customers \
         WHERE org_id = $2 AND email = ANY($1)",
    )
    .bind(&emails)
    .bind(org_id)
    .fetch_all(conn)
    .await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let index: HashMap<&str, usize> = candidates.iter().map(|&i| (rows[i].email(), i)).collect();
    let mut fates = Vec::with_capacity(found.len());
    for row in &found {
        // Borrowed from the row: no copy of the email.
        let email: &str = row.try_get(0)?;
        // Every email found is one of those asked for (an equality on the column).
        if let Some(&i) = index.get(email) {
            let bookkeeping = (row.try_get(1)?, row.try_get(2)?);
            fates.push((i as u32, Fate::found(job_id, &bookkeeping)));
        }
    }
    fates.sort_unstable_by_key(|&(i, _)| i);
    Ok(fates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{batch::tests::batch, validate::ErrorCode};

    #[test]
    fn a_row_is_inserted_from_its_own_line_unless_its_fate_says_otherwise() {
        let b = batch(&["a@x", "b@x", "c@x"]);
        let fates = [(1, Fate::InDb), (2, Fate::InFile(40))];
        assert_eq!(fate_of(&b.rows, &fates, 0), Fate::InFile(b.rows[0].line));
        assert_eq!(fate_of(&b.rows, &fates, 1), Fate::InDb);
        assert_eq!(fate_of(&b.rows, &fates, 2), Fate::InFile(40));
        let job = Uuid::from_u128(7);
        assert_eq!(Fate::found(job, &(Some(job), Some(12))), Fate::InFile(12));
        assert_eq!(Fate::found(job, &(Some(Uuid::nil()), Some(12))), Fate::InDb);
        assert_eq!(Fate::found(job, &(None, None)), Fate::InDb);
        let e = Fate::InFile(12).error(&b.rows[2]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::DuplicateInFile,
                "email c@x already appears on line 12"
            )
        );
        assert_eq!(Fate::InDb.error(&b.rows[2]).code, ErrorCode::DuplicateInDb);
    }
}
