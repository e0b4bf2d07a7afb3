//! How a run ends: [`Outcome`] when it ran (or had nothing to run), [`RunError`] when it must
//! be run again later or cannot run at all, and the internal [`Stop`] that carries a run's
//! reason to stop up to `run_job`, which records it. Causes are kept as sources.

use crate::load::LoadError;
use bulk_import_core::{
    job::{JobError, Totals},
    storage::StorageError,
    JobStatus,
};
use uuid::Uuid;

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Done(Totals),
    /// The job had already ended (done, failed or cancelled) before this run.
    AlreadyFinished(JobStatus),
    /// The job ended elsewhere while this run was going (cancelled, failed by a deadline).
    Ended(JobStatus),
    /// A job-level failure, recorded in the job row.
    Failed(JobError),
    /// SIGTERM: the current batch was finished or rolled back; the checkpoint is consistent.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("job {0} does not exist")]
    NotFound(Uuid),
    #[error("job {0} is still being uploaded")]
    NotReady(Uuid),
    /// Another importer holds a live claim on the job (or took it over from this one).
    #[error("job {0} is being run by another importer")]
    Busy(Uuid),
    #[error("invalid configuration: {what}: {source}")]
    Config {
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// Postgres or storage could not be reached past retries, or the report could not be
    /// written: the job is left for a later run.
    #[error("temporarily unable to run the job: {0}")]
    Temporary(#[from] Temporary),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl RunError {
    /// Whether running the importer again later may succeed.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, RunError::NotFound(_) | RunError::Config { .. })
    }
}

/// The cause of a failure, kept as its source (never flattened to text).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a run stopped for now (exit 75): what it was doing, and why.
#[derive(Debug, thiserror::Error)]
pub enum Temporary {
    #[error("{what}: {source}")]
    Failed {
        what: &'static str,
        #[source]
        source: Cause,
    },
    #[error("the database kept losing committed batches")]
    BatchesLost,
}

pub(crate) fn temporary(what: &'static str, source: impl Into<Cause>) -> Stop {
    Stop::Temporary(Temporary::Failed {
        what,
        source: source.into(),
    })
}

/// Why a run stopped before `done`.
#[derive(Debug)]
pub(crate) enum Stop {
    Failed(JobError),
    Temporary(Temporary),
    Interrupted,
    /// The job is no longer ours: it ended elsewhere, or another importer took it over.
    Ended(JobStatus),
    Lost,
    /// Start over from the checkpoint stored in the job row.
    Regressed,
    /// More rows were bad than `max_errors` allows; the totals committed so far.
    TooManyErrors(Totals),
    /// A gzip file decompressed past its limit (in bytes); the totals committed so far.
    TooLarge(Totals, u64),
    /// A job-level failure already recorded in the job row (with its report).
    Recorded(JobError),
}

pub(crate) fn storage_stop(what: &'static str, e: StorageError) -> Stop {
    match e {
        StorageError::NotFound(key) => {
            Stop::Failed(JobError::source_missing().with_detail(format!("object {key}")))
        }
        e if e.is_transient() => temporary(what, e),
        e => Stop::Failed(JobError::storage_unavailable().with_detail(format!("{what}: {e}"))),
    }
}

pub(crate) fn db_stop(what: &'static str, e: sqlx::Error) -> Stop {
    temporary(what, e)
}

impl From<LoadError> for Stop {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Interrupted => Stop::Interrupted,
            LoadError::Regressed(_) => Stop::Regressed,
            LoadError::Ended(status) => Stop::Ended(status),
            LoadError::LostClaim => Stop::Lost,
            LoadError::TooManyErrors(totals) => Stop::TooManyErrors(totals),
            other => temporary("applying a batch", other),
        }
    }
}
