//! Applies one batch in one transaction: its customer rows, its error rows, the job
//! counters and the checkpoint, so that a crash at any point loses nothing and repeats
//! nothing. Duplicate detection lives here too (see `insert_only` and `upsert` below).
//! Batches are applied two at a time, in a pipeline on two connections, still committing
//! in file order (`Loader::push`).

use crate::{
    copy,
    dedupe::SeenEmails,
    error_cap::{first_by_line, StoredErrors},
    validate::{Customer, ErrorCode, RowError},
};
use bulk_import_core::{
    db,
    job::Totals,
    repo::{self, BatchCommit},
    retry::Policy,
    ImportMode, JobStatus,
};
use foldhash::{HashMap, HashMapExt};
use sqlx::{postgres::PgConnectOptions, Connection, PgConnection, Postgres, Row, Transaction};
use std::{
    collections::{hash_map::Entry, VecDeque},
    sync::Arc,
    time::Duration,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the reader hands over: the rows and errors of a run of records, and the checkpoint
/// (offset and line of the next record) once they are applied.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Customer>,
    pub errors: Vec<RowError>,
    pub end_offset: u64,
    pub end_line: u64,
    /// gzip: the checkpoint in the decompressed stream.
    pub end_stream_offset: Option<u64>,
    /// Records read (set by `prepare`): the batch's share of `processed_rows`.
    records: usize,
    /// upsert: valid rows before repeats were collapsed.
    valid_rows: usize,
    /// insert_only: `rows` as tuples of COPY's binary format for `customers` (without its
    /// header and trailer); `copy_ends[i]` is where row i's tuple ends.
    copy_data: Vec<u8>,
    copy_ends: Vec<usize>,
    /// insert_only: later occurrences of an email within the batch, with the line of the
    /// first; classified with it once the table has been looked at.
    repeats: Vec<(Customer, i64)>,
    /// insert_only: for each of `repeats`, the index of its first occurrence in `rows`.
    repeat_of: Vec<u32>,
    /// Rows whose email's hash is also one of the batch read before it (set by `prepare`):
    /// `(index here, index there)`. If any, the batch cannot simply be applied beside that
    /// one (`Loader::can_follow`); a pair whose emails differ (a hash collision) is no
    /// sharing at all (`Task::apply` compares them).
    shared: Vec<(u32, u32)>,
    /// insert_only: indices into `rows` of the emails that an earlier batch of this run may
    /// have had (the Bloom filter's "maybe"): only those are looked up in the table.
    maybe_seen: Vec<usize>,
}

/// What the reader knows of the emails it has read, for `prepare`: hashes of the batch read
/// last, to tell whether a batch shares an email with the one before it (a hash collision
/// only makes a batch look as if it shared one, which costs it its overlap, never
/// correctness), and a Bloom filter of every email read so far (insert_only).
pub struct PreviousEmails {
    seen: SeenEmails,
    /// The hash of each email of the batch read last, with its row's index there.
    hashes: HashMap<u64, u32>,
}

impl PreviousEmails {
    /// Sized for `expected_rows` rows (insert_only; upsert needs no Bloom filter).
    pub fn new(mode: ImportMode, expected_rows: u64) -> PreviousEmails {
        let rows = match mode {
            ImportMode::InsertOnly => expected_rows,
            ImportMode::Upsert => 0,
        };
        PreviousEmails {
            seen: SeenEmails::new(rows),
            hashes: HashMap::new(),
        }
    }
}

impl Batch {
    /// Records in the batch so far (before `prepare`), or read (after).
    pub fn records(&self) -> usize {
        self.records.max(self.rows.len() + self.errors.len())
    }

    /// The work that needs no database, done on the reader thread so that it overlaps the
    /// previous batch's transaction. insert_only: later occurrences of an email within the
    /// batch are set aside (they are errors of the same kind as their first occurrence), and
    /// the rest is encoded for COPY. upsert: repeats
    /// are collapsed to their last occurrence (the one that wins), sorted by email so that
    /// concurrent upserts lock rows in one order. Both: whether the batch shares an email
    /// with the one before it (`previous`, which then holds this batch's emails), and
    /// (insert_only) which emails an earlier batch may have had.
    pub fn prepare(
        &mut self,
        mode: ImportMode,
        (job_id, org_id): (Uuid, i32),
        previous: &mut PreviousEmails,
    ) {
        self.records = self.rows.len() + self.errors.len();
        let rows = std::mem::take(&mut self.rows);
        match mode {
            ImportMode::InsertOnly => {
                // Where the first occurrence goes in `self.rows`, for each later one.
                let firsts: Vec<Option<u32>> = {
                    let mut first: HashMap<&str, u32> = HashMap::with_capacity(rows.len());
                    rows.iter()
                        .map(|c| {
                            let next = first.len() as u32;
                            match first.entry(c.email()) {
                                Entry::Occupied(e) => Some(*e.get()),
                                Entry::Vacant(e) => {
                                    e.insert(next);
                                    None
                                }
                            }
                        })
                        .collect()
                };
                for (c, first) in rows.into_iter().zip(firsts) {
                    match first {
                        Some(first) => {
                            let line = self.rows[first as usize].line;
                            self.repeats.push((c, line));
                            self.repeat_of.push(first);
                        }
                        None => self.rows.push(c),
                    }
                }
                self.copy_data = Vec::with_capacity(96 * 1024);
                self.copy_ends = Vec::with_capacity(self.rows.len());
                for c in &self.rows {
                    copy::push_customer(&mut self.copy_data, org_id, c, &job_id);
                    self.copy_ends.push(self.copy_data.len());
                }
            }
            ImportMode::Upsert => {
                self.valid_rows = rows.len();
                // By email, the last occurrence (highest line) first; then the others go.
                self.rows = rows;
                self.rows
                    .sort_unstable_by(|a, b| a.email().cmp(b.email()).then(b.line.cmp(&a.line)));
                self.rows
                    .dedup_by(|later, kept| later.email() == kept.email());
            }
        }
        // `rows` holds every email of the batch once (repeats were set aside or collapsed).
        let seen = &mut previous.seen;
        let hashes: Vec<u64> = self.rows.iter().map(|c| seen.hash(c.email())).collect();
        if mode == ImportMode::InsertOnly {
            // Emails of every batch read before this one. Those of the batch right before
            // may not be committed when this one is applied: they are set aside then
            // (`Staged::classify`), never looked up too early.
            self.maybe_seen = (0..hashes.len())
                .filter(|&i| seen.may_contain(hashes[i]))
                .collect();
            for &h in &hashes {
                seen.insert(h);
            }
        }
        let mut mine: HashMap<u64, u32> = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.into_iter().enumerate() {
            if let Some(&j) = previous.hashes.get(&h) {
                self.shared.push((i as u32, j));
            }
            mine.insert(h, i as u32);
        }
        previous.hashes = mine;
    }

    pub fn shares_with_previous(&self) -> bool {
        !self.shared.is_empty()
    }

    /// insert_only: later occurrences within the batch, with the line of the first.
    pub fn repeats(&self) -> &[(Customer, i64)] {
        &self.repeats
    }

    /// upsert: valid rows before repeats were collapsed.
    pub fn valid_rows(&self) -> usize {
        self.valid_rows
    }

    /// insert_only: row i as a binary COPY tuple.
    fn copy_row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.copy_ends[i - 1] };
        &self.copy_data[start..self.copy_ends[i]]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The checkpoint is not where this importer left it, though it still owns the job.
    #[error("the job's checkpoint moved under this importer")]
    CheckpointMoved,
    /// Another importer took the job over (this one's lease had expired, or its death was
    /// presumed): stop without writing anything more.
    #[error("another importer took the job over")]
    LostClaim,
    /// The job ended elsewhere (cancelled, or failed by a deadline).
    #[error("the job was {0} elsewhere")]
    Ended(JobStatus),
    /// The checkpoint is behind where this importer left it: the database lost batches
    /// committed asynchronously (a crash); the import must resume from the stored checkpoint.
    #[error(
        "the database lost recent batches (checkpoint went back to byte {0}); resuming from there"
    )]
    Regressed(i64),
    /// A concurrent job inserted the same emails between our look-up and our COPY.
    #[error("concurrent insert of the same emails")]
    Conflict,
    #[error("interrupted")]
    Interrupted,
    /// The batch just committed took the job's error rows past its `max_errors`.
    #[error("too many errors")]
    TooManyErrors(Totals),
}

impl LoadError {
    pub fn is_transient(&self) -> bool {
        match self {
            LoadError::Db(e) => db::is_transient(e),
            LoadError::Conflict => true,
            _ => false,
        }
    }
}

const UNIQUE_VIOLATION: &str = "23505";
/// How long a batch applied in the pipeline may wait for a row lock held elsewhere. A batch
/// waits (in the importer, invisible to Postgres's deadlock detector) for the one before it
/// to commit, so a concurrent job that waits for the later one while holding a row the
/// earlier one needs would otherwise deadlock unseen; after this the batch is applied again
/// alone (`Loader::apply`), which has no such wait.
const PAIR_LOCK_TIMEOUT: &str = "5s";

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

/// A batch's row work done inside its (still open) transaction.
struct Staged<'c, 'b> {
    tx: Transaction<'c, Postgres>,
    /// The reader's errors (written from the batch, not copied).
    read_errors: &'b [RowError],
    /// The errors found since (duplicates).
    errors: Vec<RowError>,
    inserted: i64,
    updated: i64,
    /// insert_only (not a dry run): the batch, whose repeats and set-aside rows `classify`
    /// turns into errors.
    insert_only: Option<&'b Batch>,
    /// insert_only, a batch applied beside the one before it: rows whose email that one also
    /// has, `(index here, index there)`. Not looked up: they are what that batch makes of
    /// the same email (`classify`).
    later: Vec<(usize, usize)>,
    /// insert_only: the rows not inserted, by index, and why (sorted by `classify`).
    fates: Vec<(u32, Fate)>,
}

/// insert_only: why a row of a batch was not inserted — which is also what a later row with
/// its email is. A row that was inserted is `InFile(its own line)` to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
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
            Fate::InFile(line) => duplicate_in_file(c, line),
            Fate::InDb => duplicate_in_db(c),
        }
    }
}

/// The fates (`Staged::fates`) a batch hands to the one after it.
type Fates = Arc<Vec<(u32, Fate)>>;

/// What became of row `i` of a batch: inserted (from its line), or its recorded fate.
fn fate_of(rows: &[Customer], fates: &[(u32, Fate)], i: usize) -> Fate {
    match fates.binary_search_by_key(&(i as u32), |&(j, _)| j) {
        Ok(k) => fates[k].1,
        Err(_) => Fate::InFile(rows[i].line),
    }
}

impl<'c, 'b> Staged<'c, 'b> {
    /// A batch's row work: `read_errors` from the reader, `errors` found since.
    fn new(
        tx: Transaction<'c, Postgres>,
        read_errors: &'b [RowError],
        errors: Vec<RowError>,
        inserted: i64,
        updated: i64,
    ) -> Staged<'c, 'b> {
        Staged {
            tx,
            read_errors,
            errors,
            inserted,
            updated,
            insert_only: None,
            later: Vec::new(),
            fates: Vec::new(),
        }
    }

    /// insert_only: turns the rows set aside (`later`) and the batch's repeats into errors.
    /// A set-aside row is what the batch before made of the same email (`before`: its rows
    /// and fates) — a repeat of the line that batch loaded it from, or of whatever that
    /// line repeated — exactly as if this batch were applied after it; a repeat is what its
    /// first occurrence is.
    fn classify(&mut self, before: Option<(&Batch, &[(u32, Fate)])>) {
        let Some(batch) = self.insert_only else {
            return;
        };
        if let Some((before, theirs)) = before {
            for &(i, j) in &self.later {
                let fate = fate_of(&before.rows, theirs, j);
                self.errors.push(fate.error(&batch.rows[i]));
                self.fates.push((i as u32, fate));
            }
        }
        self.fates.sort_unstable_by_key(|&(i, _)| i);
        for ((c, _), &first) in batch.repeats.iter().zip(&batch.repeat_of) {
            let fate = fate_of(&batch.rows, &self.fates, first as usize);
            self.errors.push(fate.error(c));
        }
    }

    /// Writes the batch's error rows into `import_errors`, in its transaction: once, after
    /// `classify`, when every one is known. In the pipeline that is while the batch before is
    /// still being applied, so that a dirty file's error rows are not written on the
    /// critical path between one commit and the next. Only the first `room` in line order
    /// are stored (`crate::error_cap`); all are counted.
    async fn write_errors(&mut self, job_id: Uuid, room: usize) -> Result<(), sqlx::Error> {
        let errors = first_by_line(self.read_errors.iter().chain(&self.errors), room);
        write_errors(&mut self.tx, job_id, errors.into_iter()).await
    }

    fn error_count(&self) -> usize {
        self.read_errors.len() + self.errors.len()
    }

    /// Writes the batch's counters and checkpoint (`finish_batch`; its error rows are
    /// written by then) and commits. Returns the totals.
    async fn commit(
        mut self,
        claim: &ClaimRef,
        checkpoint: i64,
        batch: &Batch,
    ) -> Result<Totals, LoadError> {
        let totals = finish_batch(
            &mut self.tx,
            claim,
            checkpoint,
            batch,
            (self.read_errors.len() + self.errors.len()) as i64,
            self.inserted,
            self.updated,
        )
        .await?;
        self.tx.commit().await?;
        Ok(totals)
    }
}

#[derive(Debug, thiserror::Error)]
enum StageError {
    /// insert_only: the COPY hit an email already in the table.
    #[error("an email of the batch is already in the table")]
    Existing,
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl From<sqlx::Error> for StageError {
    fn from(e: sqlx::Error) -> Self {
        StageError::Load(LoadError::Db(e))
    }
}

/// Which job a batch belongs to and the claim under which it is written.
#[derive(Debug, Clone, Copy)]
struct ClaimRef {
    job_id: Uuid,
    org_id: i32,
    owner: Uuid,
    lease: Duration,
}

/// The connection in `slot`, connecting first if there is none.
async fn ensure<'a>(
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
        let Finished { conn, outcome } = finished(oldest.task).await;
        if let Some(conn) = conn {
            if let Some(slot) = self.conns.iter_mut().find(|slot| slot.is_none()) {
                *slot = Some(conn);
            }
        }
        let (totals, rest) = match outcome {
            Outcome::Committed(totals) => {
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
                    Outcome::Failed(e @ StageError::Existing) => {
                        tracing::debug!(error = %e, "applying a batch again alone")
                    }
                    Outcome::Failed(e) => {
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
            match stage(
                conn,
                (job_id, claim.org_id),
                mode,
                batch,
                &probe,
                Vec::new(),
                How {
                    paired: false,
                    dry_run: self.dry_run,
                },
            )
            .await
            {
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

/// What a task gives back: its connection when it is fit for the next batch, and how the
/// batch ended.
struct Finished {
    conn: Option<PgConnection>,
    outcome: Outcome,
}

enum Outcome {
    Committed(Totals),
    Failed(StageError),
    /// The batch before it did not commit, or went past `max_errors`: rolled back.
    Withdrawn,
}

/// Waits for a task; a panic in it is the loader's.
async fn finished(task: JoinHandle<Finished>) -> Finished {
    match task.await {
        Ok(finished) => finished,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Finished {
            conn: None,
            outcome: Outcome::Failed(LoadError::Interrupted.into()),
        },
    }
}

/// One batch applied in a task of its own: staged on its connection while the batch before
/// it (if still in flight) is applied on the other, then committed once that one has.
struct Task {
    batch: Arc<Batch>,
    /// insert_only: the batch before, still in flight, when it shares emails with this one,
    /// and where its fates will come.
    shared_with: Option<(Arc<Batch>, oneshot::Receiver<Fates>)>,
    /// Told of this batch's fates once its rows are classified (for the batch after it).
    fates: oneshot::Sender<Fates>,
    /// insert_only: rows that may already be in the table (`Loader::candidates`).
    candidates: Vec<usize>,
    options: PgConnectOptions,
    claim: ClaimRef,
    mode: ImportMode,
    /// The checkpoint the batch before leaves (this batch's `from_offset`).
    from: i64,
    dry_run: bool,
    max_errors: Option<i64>,
    /// The cap on stored error rows and what is known of the errors before this batch.
    stored: StoredErrors,
}

impl Task {
    /// `after`: the commit of the batch before, when it is in flight; `committed` is told
    /// of this batch's commit. The whole attempt is bounded by `limit`.
    async fn run(
        self,
        mut conn: Option<PgConnection>,
        after: Option<oneshot::Receiver<Totals>>,
        committed: oneshot::Sender<Totals>,
        limit: Duration,
    ) -> Finished {
        let outcome = match tokio::time::timeout(limit, self.apply(&mut conn, after)).await {
            Ok(Ok(Some(totals))) => {
                let _ = committed.send(totals);
                Outcome::Committed(totals)
            }
            Ok(Ok(None)) => Outcome::Withdrawn,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(LoadError::Db(db::timed_out(limit)).into()),
        };
        Finished {
            // A connection whose batch did not commit may be in any state: not reused.
            conn: conn.filter(|_| matches!(outcome, Outcome::Committed(_))),
            outcome,
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
        // Rows whose email the batch before (in flight) also has: set aside, classified by
        // what that batch makes of it.
        let later: Vec<(usize, usize)> = match &self.shared_with {
            Some((before, _)) => batch
                .shared
                .iter()
                .map(|&(i, j)| (i as usize, j as usize))
                .filter(|&(i, j)| batch.rows[i].email() == before.rows[j].email())
                .collect(),
            None => Vec::new(),
        };
        let how = How {
            // Any batch may have one waiting for it (see `PAIR_LOCK_TIMEOUT`).
            paired: true,
            dry_run: self.dry_run,
        };
        let job_id = self.claim.job_id;
        let scope = (job_id, self.claim.org_id);
        let mut staged = stage(conn, scope, self.mode, batch, &self.candidates, later, how).await?;
        match self.shared_with {
            Some((before, fates)) => match fates.await {
                Ok(theirs) => staged.classify(Some((&before, &theirs))),
                // The batch before failed before classifying its rows: it does not commit,
                // so neither does this one.
                Err(_) => return Ok(None),
            },
            None => staged.classify(None),
        }
        let _ = self.fates.send(Arc::new(std::mem::take(&mut staged.fates)));
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

/// How a batch is staged: beside another (`paired`: a lock timeout), or as a dry run.
#[derive(Clone, Copy)]
struct How {
    paired: bool,
    dry_run: bool,
}

/// Begins the batch's transaction and does its row work, leaving the job row alone.
async fn stage<'c, 'b>(
    conn: &'c mut PgConnection,
    (job_id, org_id): (Uuid, i32),
    mode: ImportMode,
    batch: &'b Batch,
    candidates: &[usize],
    later: Vec<(usize, usize)>,
    How { paired, dry_run }: How,
) -> Result<Staged<'c, 'b>, StageError> {
    let mut tx = conn.begin().await?;
    if paired {
        sqlx::query(&format!("SET LOCAL lock_timeout = '{PAIR_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
    }
    if dry_run {
        let (errors, inserted, updated) =
            crate::dry_run::stage(&mut tx, (job_id, org_id), mode, batch).await?;
        return Ok(Staged::new(tx, &[], errors, inserted, updated));
    }
    match mode {
        ImportMode::InsertOnly => insert_only(tx, (job_id, org_id), batch, candidates, later).await,
        ImportMode::Upsert => upsert(tx, (job_id, org_id), batch).await,
    }
}

/// insert_only: the first occurrence of an email is inserted. A later occurrence in the
/// same batch is caught in memory; one in an earlier batch is found in the table, where
/// `last_import_id` tells this job's rows (duplicate_in_file, naming the first line) from
/// rows that were there before (duplicate_in_db), or, for the batch right before when it is
/// still in flight (`later`: `(index here, index there)`), told by that batch
/// (`Staged::classify`). Rows are COPied straight into `customers`; only `candidates` (indices
/// into `batch.rows`), the emails that may exist, are looked up first.
async fn insert_only<'c, 'b>(
    mut tx: Transaction<'c, Postgres>,
    (job_id, org_id): (Uuid, i32),
    batch: &'b Batch,
    candidates: &[usize],
    later: Vec<(usize, usize)>,
) -> Result<Staged<'c, 'b>, StageError> {
    let mut errors = Vec::new();
    // Rows not inserted: set aside, or found in the table.
    let mut skip = vec![false; batch.rows.len()];
    for &(i, _) in &later {
        skip[i] = true;
    }
    let candidates: Vec<usize> = candidates.iter().copied().filter(|&i| !skip[i]).collect();
    let fates = if candidates.is_empty() {
        Vec::new()
    } else {
        lookup(&mut tx, (job_id, org_id), &batch.rows, &candidates).await?
    };
    for &(i, fate) in &fates {
        skip[i as usize] = true;
        errors.push(fate.error(&batch.rows[i as usize]));
    }
    let inserted = batch.rows.len() - later.len() - fates.len();
    // The reader encoded every row; when some are not inserted, the others' tuples are
    // copied out.
    let kept;
    let data: &[u8] = if inserted == batch.rows.len() {
        &batch.copy_data
    } else {
        let mut tuples = Vec::with_capacity(batch.copy_data.len());
        for i in (0..batch.rows.len()).filter(|&i| !skip[i]) {
            tuples.extend_from_slice(batch.copy_row(i));
        }
        kept = tuples;
        &kept
    };
    if inserted > 0 {
        let mut sink = tx
            .copy_in_raw(
                "COPY customers (org_id, email, first_name, last_name, phone, city, last_import_id, last_import_line) FROM STDIN (FORMAT binary)",
            )
            .await?;
        sink.send(copy::BINARY_HEADER).await?;
        sink.send(data).await?;
        sink.send(copy::BINARY_TRAILER).await?;
        match sink.finish().await {
            Ok(_) => {}
            Err(e) if db::sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(StageError::Existing)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Staged {
        insert_only: Some(batch),
        later,
        fates,
        ..Staged::new(tx, &batch.errors, errors, inserted as i64, 0)
    })
}

/// insert_only: the rows among `rows[i]`, `i` in `candidates`, whose email is in the table,
/// and what each is (`Fate::found`), by index.
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

/// upsert: one `INSERT … SELECT FROM unnest(…) ON CONFLICT (org_id, email) DO UPDATE` per
/// batch.
/// The batch's repeats were collapsed to their last occurrence by `prepare`; the earlier
/// ones count as updates, exactly as if each row had been applied in file order.
async fn upsert<'c, 'b>(
    mut tx: Transaction<'c, Postgres>,
    (job_id, org_id): (Uuid, i32),
    batch: &'b Batch,
) -> Result<Staged<'c, 'b>, StageError> {
    let rows = &batch.rows;
    let mut inserted = 0i64;
    if !rows.is_empty() {
        let emails: Vec<&str> = rows.iter().map(|c| c.email()).collect();
        let column = |i: usize| -> Vec<Option<&str>> { rows.iter().map(|c| c.field(i)).collect() };
        let lines: Vec<i64> = rows.iter().map(|c| c.line).collect();
        inserted = sqlx::query_scalar(
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
        .fetch_one(&mut *tx)
        .await?;
    }
    Ok(Staged::new(
        tx,
        &batch.errors,
        Vec::new(),
        inserted,
        batch.valid_rows as i64 - inserted,
    ))
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

/// Commits the batch's counters (`errors`: its error rows, written by then) and checkpoint
/// to the job row (`repo::commit_batch`: only if this importer still owns the running job
/// and the checkpoint is where it left it).
async fn finish_batch(
    tx: &mut PgConnection,
    claim: &ClaimRef,
    checkpoint: i64,
    batch: &Batch,
    errors: i64,
    inserted: i64,
    updated: i64,
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

fn duplicate_in_file(c: &Customer, first: i64) -> RowError {
    RowError {
        line: c.line,
        code: ErrorCode::DuplicateInFile,
        message: format!("email {} already appears on line {first}", c.email()),
        fields: c.raw_fields(),
    }
}

fn duplicate_in_db(c: &Customer) -> RowError {
    RowError {
        line: c.line,
        code: ErrorCode::DuplicateInDb,
        message: format!("email {} already exists", c.email()),
        fields: c.raw_fields(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(emails: &[&str]) -> Batch {
        let rows = emails
            .iter()
            .enumerate()
            .map(|(i, e)| Customer::new(i as i64 + 2, e.to_string(), None, [""; 4]))
            .collect();
        Batch {
            rows,
            ..Batch::default()
        }
    }

    /// `batch(emails)`, prepared after the batches `previous` has seen.
    fn prepared(mode: ImportMode, emails: &[&str], previous: &mut PreviousEmails) -> Batch {
        let mut b = batch(emails);
        b.prepare(mode, (Uuid::nil(), 1), previous);
        b
    }

    #[test]
    fn a_batch_knows_whether_it_shares_an_email_with_the_one_before() {
        for mode in [ImportMode::InsertOnly, ImportMode::Upsert] {
            let mut previous = PreviousEmails::new(mode, 100);
            let sequence: [(&[&str], bool); 4] = [
                (&["a@x", "b@x", "a@x"], false),
                (&["c@x", "d@x"], false),
                (&["e@x", "d@x", "e@x"], true),
                // Only the batch right before counts.
                (&["c@x", "f@x"], false),
            ];
            for (emails, shares) in sequence {
                let b = prepared(mode, emails, &mut previous);
                assert_eq!(b.shares_with_previous(), shares, "{mode:?} {emails:?}");
            }
        }
    }

    #[test]
    fn a_batch_knows_which_of_its_rows_the_one_before_has_and_where() {
        let mut previous = PreviousEmails::new(ImportMode::InsertOnly, 100);
        let first = prepared(
            ImportMode::InsertOnly,
            &["a@x", "b@x", "c@x"],
            &mut previous,
        );
        assert!(first.shared.is_empty());
        // d@x twice: the repeat points at its first occurrence's index among the rows.
        let second = prepared(
            ImportMode::InsertOnly,
            &["d@x", "c@x", "d@x", "a@x"],
            &mut previous,
        );
        let emails: Vec<&str> = second.rows.iter().map(|c| c.email()).collect();
        assert_eq!(emails, ["d@x", "c@x", "a@x"]);
        assert_eq!(second.repeat_of, [0]);
        assert_eq!(second.repeats()[0].1, 2, "the line of the first occurrence");
        // (index here, index there): c@x is row 1 here and row 2 there, a@x row 2 and row 0.
        assert_eq!(second.shared, [(1, 2), (2, 0)]);
    }

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

    #[test]
    fn only_emails_of_earlier_batches_are_looked_up() {
        let mut previous = PreviousEmails::new(ImportMode::InsertOnly, 100);
        let first = prepared(
            ImportMode::InsertOnly,
            &["a@x", "b@x", "a@x"],
            &mut previous,
        );
        // Nothing read before; the repeat of a@x is set aside within the batch.
        assert!(first.maybe_seen.is_empty());
        assert_eq!(first.repeats().len(), 1);
        let second = prepared(
            ImportMode::InsertOnly,
            &["c@x", "b@x", "d@x", "a@x"],
            &mut previous,
        );
        // A Bloom filter may say "maybe" for c@x or d@x too, never "no" for b@x or a@x.
        assert!(second.maybe_seen.contains(&1) && second.maybe_seen.contains(&3));
        let mut upsert = PreviousEmails::new(ImportMode::Upsert, 100);
        prepared(ImportMode::Upsert, &["a@x"], &mut upsert);
        let b = prepared(ImportMode::Upsert, &["a@x"], &mut upsert);
        assert!(b.maybe_seen.is_empty(), "upsert looks nothing up");
    }
}
