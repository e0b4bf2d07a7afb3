//! Staging a batch: its transaction begun and its row work done by its mode
//! ([`insert_only`](super::insert_only), [`upsert`](super::upsert), or a
//! [dry run](super::dry_run) of either), leaving the job row alone; then its error rows
//! written and, with its counters and checkpoint, committed ([`Staged::commit`]).

use super::{
    dry_run,
    error::{LoadError, StageError},
    insert_only::{self, Fate, Fates, InsertOnly},
    upsert,
};
use crate::{batch::Batch, copy, error_cap::first_by_line, validate::RowError};
use bulk_import_core::{
    job::Totals,
    repo::{self, BatchCommit},
    ImportMode,
};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use std::{sync::Arc, time::Duration};
use uuid::Uuid;

/// How long a batch applied in the pipeline may wait for a row lock held elsewhere. A batch
/// waits (in the importer, invisible to Postgres's deadlock detector) for the one before it
/// to commit, so a concurrent job that waits for the later one while holding a row the
/// earlier one needs would otherwise deadlock unseen; after this the batch is applied again
/// alone (`Loader::apply`), which has no such wait.
const PAIR_LOCK_TIMEOUT: &str = "5s";

/// Which job a batch belongs to and the claim under which it is written.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClaimRef {
    pub job_id: Uuid,
    pub org_id: i32,
    pub owner: Uuid,
    pub lease: Duration,
}

/// How a batch is staged: beside another (`paired`: a lock timeout), or as a dry run.
#[derive(Clone, Copy)]
pub(super) struct How {
    pub paired: bool,
    pub dry_run: bool,
}

/// A batch's row work done inside its (still open) transaction.
pub(super) struct Staged<'c, 'b> {
    tx: Transaction<'c, Postgres>,
    /// The reader's errors (written from the batch, not copied).
    read_errors: &'b [RowError],
    /// The errors found since (duplicates).
    errors: Vec<RowError>,
    inserted: i64,
    updated: i64,
    /// insert_only (not a dry run): the rows set aside and the repeats, to classify.
    insert_only: Option<InsertOnly<'b>>,
}

/// Begins the batch's transaction and does its row work, leaving the job row alone.
/// insert_only: `candidates` are the rows to look up, `later` those set aside (rows whose
/// email the batch before, still in flight, also has: `(index here, index there)`).
pub(super) async fn stage_batch<'c, 'b>(
    conn: &'c mut PgConnection,
    scope: (Uuid, i32),
    mode: ImportMode,
    batch: &'b Batch,
    (candidates, later): (&[usize], Vec<(usize, usize)>),
    How { paired, dry_run }: How,
) -> Result<Staged<'c, 'b>, StageError> {
    let mut tx = conn.begin().await?;
    if paired {
        sqlx::query(&format!("SET LOCAL lock_timeout = '{PAIR_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
    }
    let staged = |tx, read_errors, errors, inserted, updated| Staged {
        tx,
        read_errors,
        errors,
        inserted,
        updated,
        insert_only: None,
    };
    if dry_run {
        let (errors, inserted, updated) = dry_run::record_rows(&mut tx, scope, mode, batch).await?;
        return Ok(staged(tx, &[], errors, inserted, updated));
    }
    match mode {
        ImportMode::InsertOnly => {
            let (work, errors) =
                insert_only::copy_rows(&mut tx, scope, batch, candidates, later).await?;
            let inserted = work.inserted;
            Ok(Staged {
                insert_only: Some(work),
                ..staged(tx, &batch.errors, errors, inserted, 0)
            })
        }
        ImportMode::Upsert => {
            let inserted = upsert::upsert_rows(&mut tx, scope, batch).await?;
            let updated = batch.valid_rows() as i64 - inserted;
            Ok(staged(tx, &batch.errors, Vec::new(), inserted, updated))
        }
    }
}

impl Staged<'_, '_> {
    /// insert_only: turns the rows set aside and the batch's repeats into errors
    /// (`InsertOnly::classify`; `before`: the rows and fates of the batch before, when this
    /// one was applied beside it). Nothing to do in the other modes.
    pub(super) fn classify(&mut self, before: Option<(&Batch, &[(u32, Fate)])>) {
        if let Some(work) = &mut self.insert_only {
            work.classify(before, &mut self.errors);
        }
    }

    /// The fates of the batch's rows, for the batch after it (after `classify`).
    pub(super) fn take_fates(&mut self) -> Fates {
        match &mut self.insert_only {
            Some(work) => work.take_fates(),
            None => Arc::default(),
        }
    }

    /// Writes the batch's error rows into `import_errors`, in its transaction: once, after
    /// `classify`, when every one is known. In the pipeline that is while the batch before is
    /// still being applied, so that a dirty file's error rows are not written on the
    /// critical path between one commit and the next. Only the first `room` in line order
    /// are stored (`crate::error_cap`); all are counted.
    pub(super) async fn write_errors(
        &mut self,
        job_id: Uuid,
        room: usize,
    ) -> Result<(), sqlx::Error> {
        let errors = first_by_line(self.read_errors.iter().chain(&self.errors), room);
        write_errors(&mut self.tx, job_id, errors.into_iter()).await
    }

    pub(super) fn error_count(&self) -> usize {
        self.read_errors.len() + self.errors.len()
    }

    /// Writes the batch's counters and checkpoint (`finish_batch`; its error rows are
    /// written by then) and commits. Returns the totals.
    pub(super) async fn commit(
        mut self,
        claim: &ClaimRef,
        checkpoint: i64,
        batch: &Batch,
    ) -> Result<Totals, LoadError> {
        let counts = (self.error_count() as i64, self.inserted, self.updated);
        let totals = finish_batch(&mut self.tx, claim, checkpoint, batch, counts).await?;
        self.tx.commit().await?;
        Ok(totals)
    }
}

/// COPies error rows into `import_errors`.
async fn write_errors(
    tx: &mut PgConnection,
    job_id: Uuid,
    errors: impl Iterator<Item = &RowError>,
) -> Result<(), sqlx::Error> {
    let mut data = Vec::new();
    let job_id = job_id.hyphenated().to_string();
    for e in errors {
        copy::push_error(&mut data, &job_id, e);
    }
    if data.is_empty() {
        return Ok(());
    }
    let mut sink = tx
        .copy_in_raw(
            "COPY import_errors (job_id, line, code, message, email, first_name, last_name, phone, city) FROM STDIN",
        )
        .await?;
    sink.send(data).await?;
    sink.finish().await?;
    Ok(())
}

/// Commits the batch's counters (`errors`: its error rows, written by then; `inserted`,
/// `updated`) and checkpoint to the job row (`repo::commit_batch`: only if this importer
/// still owns the running job and the checkpoint is where it left it).
async fn finish_batch(
    tx: &mut PgConnection,
    claim: &ClaimRef,
    checkpoint: i64,
    batch: &Batch,
    (errors, inserted, updated): (i64, i64, i64),
) -> Result<Totals, LoadError> {
    let commit = BatchCommit {
        owner: claim.owner,
        lease: claim.lease,
        from_offset: checkpoint,
        to_offset: batch.end_offset as i64,
        to_line: batch.end_line as i64,
        to_stream_offset: batch.end_stream_offset.map(|o| o as i64),
        processed: batch.records() as i64,
        inserted,
        updated,
        errors,
    };
    repo::commit_batch(tx, claim.job_id, &commit)
        .await?
        .ok_or(LoadError::CheckpointMoved)
}
