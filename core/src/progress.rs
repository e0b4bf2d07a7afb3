//! Progress snapshots the importer publishes on a Redis channel per job (every
//! `PROGRESS_EVERY` rows, and once at the end). The API's event streams take a message as a
//! wake-up and send the job row itself (Postgres is the truth; Redis may drop messages); on
//! Kubernetes the operator mirrors progress from Postgres into the ImportJob status.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub job_id: Uuid,
    pub status: crate::JobStatus,
    pub processed_rows: i64,
    pub inserted_rows: i64,
    pub updated_rows: i64,
    pub error_rows: i64,
    pub bytes_read: i64,
    pub file_size: i64,
    pub progress_percent: f64,
}

/// The Redis pub/sub channel carrying a job's snapshots.
pub fn channel(job_id: Uuid) -> String {
    format!("bulk-import:progress:{job_id}")
}
