//! Why a batch was not applied: `LoadError` for the loader's caller (`crate::run`), which
//! decides by kind (retry, resume, stop), and `StageError` inside the pipeline, which also
//! knows a COPY that hit an existing email (then the batch is applied again, looking every
//! row up first).

use bulk_import_core::{db, job::Totals, JobStatus};

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

#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
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
