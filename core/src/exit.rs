//! The importer's process exit codes: the contract between the importer and whatever runs
//! it (the local executor, the Job's `podFailurePolicy`, scripts).

/// The job is done, or had already ended before this run (done or cancelled).
pub const OK: i32 = 0;
/// A permanent failure, recorded in the job row when possible (or the job had already
/// failed): do not run it again.
pub const PERMANENT: i32 = 2;
/// Try later: the database or storage is unreachable, the job is still uploading, or another
/// importer holds a live claim on it. Not a failed attempt.
pub const TEMPORARY: i32 = 75;
/// Stopped by SIGTERM or SIGINT with a consistent checkpoint: run again to resume.
pub const INTERRUPTED: i32 = 143;

/// A run that finds its job already ended exits as that job ended: a re-run of a `failed`
/// import (its Job deleted and created again, or run by hand) must not look like a success
/// to whoever runs it.
pub fn already_finished(status: crate::JobStatus) -> i32 {
    match status {
        crate::JobStatus::Failed => PERMANENT,
        _ => OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobStatus;

    #[test]
    fn a_run_of_an_ended_job_exits_as_the_job_ended() {
        assert_eq!(already_finished(JobStatus::Done), OK);
        assert_eq!(already_finished(JobStatus::Cancelled), OK);
        assert_eq!(already_finished(JobStatus::Failed), PERMANENT);
    }
}
