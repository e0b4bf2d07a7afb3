//! The bulk-import importer: streams a CSV object from storage, validates every row, loads
//! batches with COPY (each batch, its errors, the counters and the checkpoint in one
//! transaction), publishes progress and writes `errors.csv`. See the README's "Import
//! semantics" for the rules.

pub mod copy;
pub mod dedupe;
pub mod load;
pub mod publish;
pub mod reader;
pub mod report;
pub mod run;
pub mod source;
pub mod submit;
pub mod validate;

pub use run::{run_job, Outcome, RunError};

/// Process exit codes, so that executors know whether to run the importer again.
pub mod exit {
    use bulk_import_core::JobStatus;

    /// The job is done (now, or already before this run).
    pub const OK: i32 = 0;
    /// A permanent failure (recorded in the job row when possible): do not retry.
    pub const PERMANENT: i32 = 2;
    /// A temporary failure (database unreachable, job not uploaded yet): retry later.
    pub const TEMPORARY: i32 = 75;
    /// Stopped by SIGTERM or SIGINT with a consistent checkpoint: retry to resume.
    pub const INTERRUPTED: i32 = 143;

    /// A run that finds its job already ended exits as that job ended: a re-run of a
    /// `failed` import (its Job deleted and created again, or run by hand) must not look
    /// like a success to whoever runs it.
    pub fn already_finished(status: JobStatus) -> i32 {
        match status {
            JobStatus::Failed => PERMANENT,
            _ => OK,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_run_of_an_ended_job_exits_as_the_job_ended() {
            assert_eq!(already_finished(JobStatus::Done), OK);
            assert_eq!(already_finished(JobStatus::Failed), PERMANENT);
        }
    }
}
