//! The pipeline: batches applied two at a time, each in a task of its own on a connection
//! of its own, still committing in file order (`Loader::push`); a batch that goes wrong is
//! applied again alone with the usual retries (`Loader::apply`).

use super::{
    error::{LoadError, StageError},
    insert_only::Fates,
    stage::{stage_batch, ClaimRef, How},
    task::{ensure, finished, BatchEnd, Finished, Task},
};
use crate::{batch::Batch, error_cap::StoredErrors};
use bulk_import_core::{db, job::Totals, repo, retry::Policy, ImportMode, JobStatus};
use sqlx::{postgres::PgConnectOptions, PgConnection};
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Applies batches in order, each in one transaction with its checkpoint.
///
/// Batches go through a pipeline two deep (`push`): each is applied in a task of its own on
/// its own connection, beside the batch before it, so Postgres uses both cores and a
/// connection starts the next batch as soon as its own commits. Transactions still commit
/// in file order: a batch does all its row work, then waits for the one before it to commit
/// before it moves the checkpoint and commits. If a batch does not commit, nothing of the
/// one after it is kept; that one is applied again alone with the retry rules of `apply`
/// (which also handles a commit whose acknowledgement was lost), the other goes back into
/// the pipeline.
pub struct Loader {
    options: PgConnectOptions,
    /// Idle connections (a batch in flight holds its own).
    conns: [Option<PgConnection>; 2],
    /// Batches being applied, oldest first (at most two).
    inflight: VecDeque<InFlight>,
    /// The job's `max_errors`.
    max_errors: Option<i64>,
    /// `MAX_STORED_ERROR_ROWS`, and the job's error rows as of the last commit seen.
    stored: StoredErrors,
    job_id: Uuid,
    /// The job's organization: the only one whose customers it reads and writes.
    org_id: i32,
    mode: ImportMode,
    /// Set after a COPY hit an existing email: from then on every row is looked up first.
    probe_all: bool,
    /// Checkpoint this importer expects to find in the job row.
    checkpoint: i64,
    cancel: CancellationToken,
    /// The claim this importer holds on the job (`repo::claim`), renewed with each batch.
    owner: Uuid,
    lease: Duration,
    /// Client-side bound of one attempt at a batch: a half-open connection is
    /// given up after it and the batch retried on a new one.
    op_timeout: Duration,
    /// Write no customer row (`crate::dry_run`).
    pub dry_run: bool,
}

impl Loader {
    pub fn new(
        options: PgConnectOptions,
        (job_id, org_id): (Uuid, i32),
        mode: ImportMode,
        checkpoint: i64,
        cancel: CancellationToken,
    ) -> Loader {
        Loader {
            options,
            conns: [None, None],
            inflight: VecDeque::new(),
            max_errors: None,
            stored: StoredErrors::unlimited(),
            job_id,
            org_id,
            mode,
            probe_all: false,
            checkpoint,
            cancel,
            owner: Uuid::nil(),
            lease: Duration::from_secs(30),
            op_timeout: Duration::from_secs(70),
            dry_run: false,
        }
    }

    /// The claim under which batches are written (`repo::claim`) and the client-side bound
    /// of one attempt at a batch.
    pub fn owned_by(mut self, owner: Uuid, lease: Duration, op_timeout: Duration) -> Loader {
        self.owner = owner;
        self.lease = lease;
        self.op_timeout = op_timeout;
        self
    }

    fn claim(&self) -> ClaimRef {
        ClaimRef {
            job_id: self.job_id,
            org_id: self.org_id,
            owner: self.owner,
            lease: self.lease,
        }
    }

    /// Applies a batch, retrying transient failures with exponential backoff (reconnecting
    /// each time). Returns the job's committed totals.
    pub async fn apply(&mut self, batch: &Batch) -> Result<Totals, LoadError> {
        let mut backoff = Policy::MINUTE.backoff();
        loop {
            let limit = self.op_timeout;
            let attempt = match tokio::time::timeout(limit, self.apply_once(batch)).await {
                Ok(result) => result,
                Err(_) => Err(LoadError::Db(db::timed_out(limit))),
            };
            let attempt = match attempt {
                Err(LoadError::CheckpointMoved) => self.refused(batch).await,
                other => other,
            };
            match attempt {
                Ok(totals) => {
                    self.checkpoint = batch.end_offset as i64;
                    return Ok(totals);
                }
                Err(e) if e.is_transient() => {
                    let Some(delay) = backoff.next() else {
                        return Err(e);
                    };
                    tracing::warn!(error = %e, ?delay, "batch failed, retrying");
                    self.conns = [None, None];
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return Err(LoadError::Interrupted),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The job row refused a batch's commit: find out why. A commit whose acknowledgement
    /// was lost looks like this on the retry (the stored checkpoint is the batch's end, and
    /// the job still ours): then the batch is applied and its totals are returned.
    async fn refused(&mut self, batch: &Batch) -> Result<Totals, LoadError> {
        let limit = self.op_timeout;
        let conn = ensure(&mut self.conns[0], &self.options).await?;
        let standing = db::with_timeout(limit, repo::standing(&mut *conn, self.job_id))
            .await?
            .ok_or(LoadError::Ended(JobStatus::Failed))?;
        if standing.status != JobStatus::Processing {
            return Err(LoadError::Ended(standing.status));
        }
        if standing.owner_id != Some(self.owner) {
            return Err(LoadError::LostClaim);
        }
        let stored = standing.totals.checkpoint_offset;
        if stored == batch.end_offset as i64 {
            return Ok(standing.totals);
        }
        if stored < self.checkpoint {
            return Err(LoadError::Regressed(stored));
        }
        Err(LoadError::CheckpointMoved)
    }

    /// Whether `batch` may be applied beside the batch read just before it, which is still
    /// being applied:
    /// - insert_only: always; rows whose email that batch also has are set aside and
    ///   classified by what that batch makes of the email (`Staged::classify`: it hands
    ///   its rows' fates over as soon as it has them, before it commits), so a file with
    ///   repeated emails keeps its overlap and nothing is looked up or written between one
    ///   commit and the next;
    /// - upsert and dry runs: only when they have no email in common.
    ///
    /// Also for a file sorted by email, where both batches insert at the right edge of the
    /// email index: measured, one stream there is slower than two (bench/run.sh, docs/benchmarks.md).
    fn can_follow(&self, batch: &Batch) -> bool {
        !batch.shares_with_previous() || (self.mode == ImportMode::InsertOnly && !self.dry_run)
    }

    /// Hands the next batch (in file order) to the pipeline: it is applied in a task of its
    /// own, on its own connection, beside the batch before it when that one is still being
    /// applied (`can_follow`), and commits right after it. Waits, first, for the oldest batch
    /// when two are already in flight. Returns the job's committed totals after the last
    /// batch that committed meanwhile, if any.
    ///
    /// Stops with `TooManyErrors` at the first commit that takes the job's error rows past
    /// its `max_errors` (`stop_after_errors`): the batch after that one does not commit.
    pub async fn push(&mut self, batch: Batch) -> Result<Option<Totals>, LoadError> {
        let batch = Arc::new(batch);
        let mut committed = None;
        while match self.inflight.len() {
            0 => false,
            1 => !self.can_follow(&batch),
            _ => true,
        } {
            committed = Some(self.complete_oldest().await?);
        }
        self.spawn(batch);
        Ok(committed)
    }

    /// Waits for every batch handed over to be applied; returns the totals after the last.
    pub async fn flush(&mut self) -> Result<Option<Totals>, LoadError> {
        let mut committed = None;
        while !self.inflight.is_empty() {
            committed = Some(self.complete_oldest().await?);
        }
        Ok(committed)
    }

    /// The job's `max_errors`: no batch commits after the one that goes past it.
    pub fn stop_after_errors(mut self, max_errors: Option<i64>) -> Loader {
        self.max_errors = max_errors;
        self
    }

    /// Stores at most `cap` error rows for the job, which has `committed` already
    /// (`crate::error_cap`).
    pub fn store_errors_at_most(mut self, cap: i64, committed: i64) -> Loader {
        self.stored = StoredErrors {
            cap,
            committed,
            in_flight: 0,
        };
        self
    }

    fn over_max(&self, totals: &Totals) -> bool {
        self.max_errors.is_some_and(|max| totals.error_rows > max)
    }

    /// Starts applying `batch` in a task, after the batch in flight before it, if any.
    fn spawn(&mut self, batch: Arc<Batch>) {
        let (after, from, shared_with) = match self.inflight.back_mut() {
            Some(before) => (
                before.committed.take(),
                before.batch.end_offset as i64,
                match (batch.shares_with_previous(), before.fates.take()) {
                    (true, Some(fates)) => Some((before.batch.clone(), fates)),
                    _ => None,
                },
            ),
            None => (None, self.checkpoint, None),
        };
        let (committed, committed_rx) = oneshot::channel();
        let (fates, fates_rx) = oneshot::channel();
        let task = Task {
            candidates: self.candidates(&batch),
            batch: batch.clone(),
            shared_with,
            fates,
            options: self.options.clone(),
            claim: self.claim(),
            mode: self.mode,
            from,
            dry_run: self.dry_run,
            max_errors: self.max_errors,
            stored: StoredErrors {
                in_flight: self.inflight.back().map_or(0, |b| b.batch.records() as i64),
                ..self.stored
            },
        };
        let conn = self.conns.iter_mut().find_map(Option::take);
        let limit = self.op_timeout;
        let beside = after.is_some();
        let handle = tokio::spawn(task.run(conn, after, committed, limit));
        self.inflight.push_back(InFlight {
            batch,
            task: handle,
            committed: Some(committed_rx),
            fates: Some(fates_rx),
            beside,
        });
    }

    /// Waits for the oldest batch in flight. If it did not commit, neither did the one after
    /// it (which waits for its commit): both are then applied again, the failed one alone
    /// with `apply`'s retries, the next back in the pipeline.
    async fn complete_oldest(&mut self) -> Result<Totals, LoadError> {
        let oldest = self.inflight.pop_front().expect("a batch in flight");
        let Finished { conn, end } = finished(oldest.task).await;
        if let Some(conn) = conn {
            if let Some(slot) = self.conns.iter_mut().find(|slot| slot.is_none()) {
                *slot = Some(conn);
            }
        }
        let (totals, rest) = match end {
            BatchEnd::Committed(totals) => {
                self.checkpoint = oldest.batch.end_offset as i64;
                tracing::debug!(
                    beside_previous = oldest.beside,
                    shared = oldest.batch.shares_with_previous(),
                    "applied a batch"
                );
                (totals, Vec::new())
            }
            failed => {
                let mut rest = Vec::new();
                while let Some(next) = self.inflight.pop_front() {
                    finished(next.task).await;
                    rest.push(next.batch);
                }
                match failed {
                    // Expected: an email of the batch was in the table before the import.
                    BatchEnd::Failed(e @ StageError::Existing) => {
                        tracing::debug!(error = %e, "applying a batch again alone")
                    }
                    BatchEnd::Failed(e) => {
                        tracing::warn!(error = %e, "a batch failed in the pipeline; applying it alone")
                    }
                    _ => tracing::warn!("a batch was withdrawn; applying it alone"),
                }
                self.conns = [None, None];
                (self.apply(&oldest.batch).await?, rest)
            }
        };
        self.stored.committed = totals.error_rows;
        if self.over_max(&totals) {
            return Err(LoadError::TooManyErrors(totals));
        }
        for batch in rest {
            self.spawn(batch);
        }
        Ok(totals)
    }

    async fn apply_once(&mut self, batch: &Batch) -> Result<Totals, LoadError> {
        let (claim, mode, checkpoint) = (self.claim(), self.mode, self.checkpoint);
        let job_id = claim.job_id;
        loop {
            let probe = self.candidates(batch);
            let conn = ensure(&mut self.conns[0], &self.options).await?;
            let how = How {
                paired: false,
                dry_run: self.dry_run,
            };
            let scope = (job_id, claim.org_id);
            match stage_batch(conn, scope, mode, batch, (&probe, Vec::new()), how).await {
                Ok(mut s) => {
                    s.classify(None);
                    // Alone: the batches before it have committed.
                    let room = self.stored.room(self.stored.committed);
                    s.write_errors(job_id, room).await?;
                    return s.commit(&claim, checkpoint, batch).await;
                }
                // An email already in the table (or committed by a concurrent job since the
                // look-up): redo the batch looking every row up first.
                Err(StageError::Existing) if !self.probe_all => self.probe_all = true,
                Err(StageError::Existing) => return Err(LoadError::Conflict),
                Err(StageError::Load(e)) => return Err(e),
            }
        }
    }

    /// insert_only: the emails of the batch that may already be in the table (a Bloom
    /// filter of this run's emails, or every row once a COPY has hit an existing email).
    /// As indices into `batch.rows`.
    fn candidates(&self, batch: &Batch) -> Vec<usize> {
        match self.mode {
            ImportMode::Upsert => Vec::new(),
            ImportMode::InsertOnly if self.probe_all => (0..batch.rows.len()).collect(),
            ImportMode::InsertOnly => batch.maybe_seen.clone(),
        }
    }
}

impl Drop for Loader {
    /// A batch still in flight is abandoned: its transaction never commits.
    fn drop(&mut self) {
        for batch in &self.inflight {
            batch.task.abort();
        }
    }
}

/// A batch handed to the pipeline (`Loader::push`).
struct InFlight {
    batch: Arc<Batch>,
    task: JoinHandle<Finished>,
    /// Resolved with the job's totals when the batch commits; taken by the batch after it,
    /// which commits only then.
    committed: Option<oneshot::Receiver<Totals>>,
    /// insert_only: resolved with the batch's fates once its rows are classified; taken by
    /// the batch after it when that one shares emails with it.
    fates: Option<oneshot::Receiver<Fates>>,
    /// Whether it was applied beside the batch before it (for the debug log).
    beside: bool,
}
