//! Progress snapshots: what the importer publishes to Redis after each batch and what the
//! API relays as Server-Sent Events.

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
