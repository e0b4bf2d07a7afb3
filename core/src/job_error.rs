//! Why a job failed, as users see it: a stable code and a safe message (docs/import-semantics.md, When a job fails). The
//! stored `import_jobs.error` is `"<code>: <message>"` and never holds driver, S3 or OS text
//! (which can name internal hosts, buckets or paths); those details go to the log, with the
//! job id, where the failure is recorded ([`JobError::log`]).

use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// Stable and machine-readable, e.g. `storage_unavailable`.
    pub code: &'static str,
    /// Safe to show: says what happened, never where inside the system.
    pub message: String,
    /// For the log only.
    pub detail: Option<String>,
}

impl JobError {
    pub fn new(code: &'static str, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Attaches the internal cause, which is logged and never stored.
    pub fn with_detail(mut self, detail: impl fmt::Display) -> JobError {
        self.detail = Some(detail.to_string());
        self
    }

    /// The value for `import_jobs.error`.
    pub fn stored(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    /// Logs the failure with its detail and the job id (the request id, where there is one,
    /// is on the caller's span).
    pub fn log(&self, job_id: Uuid) {
        tracing::error!(
            %job_id,
            code = self.code,
            detail = self.detail.as_deref().unwrap_or("-"),
            "import failed: {}",
            self.message
        );
    }

    pub fn source_missing() -> JobError {
        JobError::new(
            "source_missing",
            "the uploaded file was not found in storage",
        )
    }

    pub fn storage_unavailable() -> JobError {
        JobError::new(
            "storage_unavailable",
            "the uploaded file could not be read from storage (retried)",
        )
    }

    pub fn report_failed() -> JobError {
        JobError::new(
            "report_failed",
            "the error report could not be written to storage (retried)",
        )
    }

    pub fn database_unavailable() -> JobError {
        JobError::new(
            "database_unavailable",
            "the database was unavailable (retried)",
        )
    }

    pub fn importer_stopped(attempts: u32) -> JobError {
        JobError::new(
            "importer_stopped",
            format!("the importer stopped {attempts} times before finishing"),
        )
    }

    pub fn conflict() -> JobError {
        JobError::new(
            "job_conflict",
            "the job was finished, failed or removed elsewhere while running",
        )
    }

    /// A gzip upload decompressed past `limit` bytes (`MAX_DECOMPRESSED_BYTES`, or
    /// `MAX_DECOMPRESSION_RATIO` times its stored size).
    pub fn file_too_large(limit: u64) -> JobError {
        JobError::new(
            "file_too_large",
            format!(
                "the compressed file expands to more than {limit} bytes, the most this service \
                 accepts for its size; the batches committed before stay loaded"
            ),
        )
    }

    pub fn internal() -> JobError {
        JobError::new("internal_error", "the import failed on an internal error")
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_has_no_detail() {
        let e = JobError::storage_unavailable()
            .with_detail("dispatch failure: http://garage.internal:3900 connection refused");
        assert_eq!(
            e.stored(),
            "storage_unavailable: the uploaded file could not be read from storage (retried)"
        );
        assert!(!e.to_string().contains("garage.internal"));
    }
}
