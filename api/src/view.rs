//! The job JSON the API returns (the seed service's fields, extended).

use bulk_import_core::{ImportMode, Job, JobStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    /// `pending`, `processing`, `done` or `failed`.
    #[schema(value_type = String, example = "processing")]
    pub status: JobStatus,
    #[schema(value_type = String, example = "insert_only")]
    pub mode: ImportMode,
    pub processed_rows: i64,
    pub inserted_rows: i64,
    pub updated_rows: i64,
    pub error_rows: i64,
    /// Bytes read of the file, in percent.
    pub progress_percent: f64,
    pub file_name: String,
    pub file_size: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Job-level failure reason (`failed` jobs).
    pub error: Option<String>,
    /// Whether `GET /imports/{id}/errors` has a report to hand out.
    pub errors_report_available: bool,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        JobView {
            id: j.id,
            status: j.status().public(),
            mode: j.mode(),
            processed_rows: j.processed_rows,
            inserted_rows: j.inserted_rows,
            updated_rows: j.updated_rows,
            error_rows: j.error_rows,
            progress_percent: j.progress_percent(),
            file_name: j.file_name.clone(),
            file_size: j.file_size,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error: j.error.clone(),
            errors_report_available: j.report_object.is_some(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub limit: i64,
    pub offset: i64,
    /// All of the caller's jobs.
    pub total: i64,
}
