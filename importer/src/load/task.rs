//! One batch applied in a task of its own (`Task`), on a connection of its own, beside the
//! batch before it; how it ended (`BatchEnd`) goes back to the pipeline.

use super::{
    error::{LoadError, StageError},
    insert_only::Fates,
    stage::{stage_batch, ClaimRef, How},
};
use crate::{batch::Batch, error_cap::StoredErrors};
use bulk_import_core::{db, job::Totals, ImportMode};
use sqlx::{postgres::PgConnectOptions, Connection, PgConnection};
use std::{sync::Arc, time::Duration};
use tokio::{sync::oneshot, task::JoinHandle};

/// The connection in `slot`, connecting first if there is none.
pub(super) async fn ensure<'a>(
    slot: &'a mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<&'a mut PgConnection, sqlx::Error> {
    if slot.is_none() {
        *slot = Some(connect(options).await?);
    }
    Ok(slot.as_mut().expect("just connected"))
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    // Batches commit without waiting for the WAL flush: a database crash can lose the last
    // few, together with their checkpoint (they are one transaction), and the import then
    // resumes from the checkpoint that survived (`Regressed`). The final `done` update is a
    // normal, synchronous commit, which flushes all of them.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// What a task gives back: its connection when it is fit for the next batch, and how the
/// batch ended.
pub(super) struct Finished {
    pub conn: Option<PgConnection>,
    pub end: BatchEnd,
}

pub(super) enum BatchEnd {
    Committed(Totals),
    Failed(StageError),
    /// The batch before it did not commit, or went past `max_errors`: rolled back.
    Withdrawn,
}

/// Waits for a task; a panic in it is the loader's.
pub(super) async fn finished(task: JoinHandle<Finished>) -> Finished {
    match task.await {
        Ok(finished) => finished,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Finished {
            conn: None,
            end: BatchEnd::Failed(LoadError::Interrupted.into()),
        },
    }
}

/// One batch applied in a task of its own: staged on its connection while the batch before
/// it (if still in flight) is applied on the other, then committed once that one has.
pub(super) struct Task {
    pub batch: Arc<Batch>,
    /// insert_only: the batch before, still in flight, when it shares emails with this one,
    /// and where its fates will come.
    pub shared_with: Option<(Arc<Batch>, oneshot::Receiver<Fates>)>,
    /// Told of this batch's fates once its rows are classified (for the batch after it).
    pub fates: oneshot::Sender<Fates>,
    /// insert_only: rows that may already be in the table (`Loader::candidates`).
    pub candidates: Vec<usize>,
    pub options: PgConnectOptions,
    pub claim: ClaimRef,
    pub mode: ImportMode,
    /// The checkpoint the batch before leaves (this batch's `from_offset`).
    pub from: i64,
    pub dry_run: bool,
    pub max_errors: Option<i64>,
    /// The cap on stored error rows and what is known of the errors before this batch.
    pub stored: StoredErrors,
}

impl Task {
    /// `after`: the commit of the batch before, when it is in flight; `committed` is told
    /// of this batch's commit. The whole attempt is bounded by `limit`.
    pub(super) async fn run(
        self,
        mut conn: Option<PgConnection>,
        after: Option<oneshot::Receiver<Totals>>,
        committed: oneshot::Sender<Totals>,
        limit: Duration,
    ) -> Finished {
        let end = match tokio::time::timeout(limit, self.apply(&mut conn, after)).await {
            Ok(Ok(Some(totals))) => {
                let _ = committed.send(totals);
                BatchEnd::Committed(totals)
            }
            Ok(Ok(None)) => BatchEnd::Withdrawn,
            Ok(Err(e)) => BatchEnd::Failed(e),
            Err(_) => BatchEnd::Failed(LoadError::Db(db::timed_out(limit)).into()),
        };
        Finished {
            // A connection whose batch did not commit may be in any state: not reused.
            conn: conn.filter(|_| matches!(end, BatchEnd::Committed(_))),
            end,
        }
    }

    /// Rows whose email the batch before (in flight) also has, `(index here, index there)`:
    /// set aside, classified by what that batch makes of it. A pair of hashes whose emails
    /// differ (a collision) is no sharing.
    fn set_aside(&self) -> Vec<(usize, usize)> {
        let batch = &*self.batch;
        match &self.shared_with {
            Some((before, _)) => batch
                .shared
                .iter()
                .map(|&(i, j)| (i as usize, j as usize))
                .filter(|&(i, j)| batch.rows[i].email() == before.rows[j].email())
                .collect(),
            None => Vec::new(),
        }
    }

    /// The batch's totals once committed; `None` when withdrawn.
    async fn apply(
        self,
        slot: &mut Option<PgConnection>,
        after: Option<oneshot::Receiver<Totals>>,
    ) -> Result<Option<Totals>, StageError> {
        let batch = &*self.batch;
        let conn = ensure(slot, &self.options).await.map_err(LoadError::Db)?;
        let later = self.set_aside();
        let how = How {
            // Any batch may have one waiting for it (see `PAIR_LOCK_TIMEOUT`).
            paired: true,
            dry_run: self.dry_run,
        };
        let job_id = self.claim.job_id;
        let scope = (job_id, self.claim.org_id);
        let rows = (&self.candidates[..], later);
        let mut staged = stage_batch(conn, scope, self.mode, batch, rows, how).await?;
        match self.shared_with {
            Some((before, fates)) => match fates.await {
                Ok(theirs) => staged.classify(Some((&before, &theirs))),
                // The batch before failed before classifying its rows: it does not commit,
                // so neither does this one.
                Err(_) => return Ok(None),
            },
            None => staged.classify(None),
        }
        let _ = self.fates.send(staged.take_fates());
        // Near the cap on stored error rows, how many this batch may store is known only
        // once the batch before has committed (`crate::error_cap`).
        let early = self.stored.fit(staged.error_count());
        if early {
            staged.write_errors(job_id, usize::MAX).await?;
        }
        let before = match after {
            Some(after) => match after.await {
                Ok(totals) if self.max_errors.is_none_or(|max| totals.error_rows <= max) => {
                    totals.error_rows
                }
                // Dropping the transaction rolls the batch back.
                _ => return Ok(None),
            },
            None => self.stored.committed,
        };
        if !early {
            staged
                .write_errors(job_id, self.stored.room(before))
                .await?;
        }
        let totals = staged.commit(&self.claim, self.from, batch).await?;
        Ok(Some(totals))
    }
}
