//! The job JSON of the bulk-import API (`GET /imports/{id}`, `GET /imports`, the event
//! stream's snapshots, the answers of upload, cancel and retry), as one set of types: the API
//! serialises them, the CLI deserialises them. Only serde, uuid and chrono: the CLI depends
//! on this crate without any server dependency. The API converts its rows into these types
//! in `bulk_import_core::view`; docs/api.md describes the fields.
//!
//! Compatibility: a client reads the fields it knows and ignores the others, and a status it
//! does not know is [`Status::Unknown`], so an older CLI keeps working against a newer API.

mod preview;

pub use preview::{HeaderMapping, PreviewRow, PreviewValues, PreviewView, RowProblem};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: Uuid,
    /// `queued`, `pending`, `processing`, `done`, `failed` or `cancelled`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, example = "processing")
    )]
    pub status: Status,
    /// While `queued`: its place in the queue for an importer slot (1 is next); `null`
    /// otherwise.
    #[serde(default)]
    pub queue_position: Option<i64>,
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, example = "insert_only")
    )]
    pub mode: Mode,
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
    /// Job-level failure reason (`failed` jobs): `"<code>: <message>"`.
    pub error: Option<String>,
    /// The stable code of `error` alone (`failed` jobs), e.g. `deadline_exceeded`.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Whether `GET /imports/{id}/errors` has a report to hand out.
    pub errors_report_available: bool,
    /// A dry run: every check, no customer row written.
    pub dry_run: bool,
    /// The error limit asked for, if any.
    pub max_errors: Option<i64>,
    /// How the file was read; `null` until the importer has started.
    pub dialect: Option<DialectView>,
    /// Who started the import (a member of the organization, or a former one).
    pub created_by: CreatedBy,
}

impl JobView {
    /// `done`, `failed` or `cancelled`: the job will not change any more (until a retry).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            Status::Done | Status::Failed | Status::Cancelled
        )
    }
}

/// The public life cycle of a job: `[queued →] pending → processing → done | failed |
/// cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an importer slot (`queue_position` says its place).
    Queued,
    Pending,
    Processing,
    Done,
    Failed,
    Cancelled,
    /// A status this build does not know (a newer API); never sent by the API.
    #[serde(other)]
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How rows are written: `insert_only` (an email already present is a bad row) or `upsert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    InsertOnly,
    Upsert,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedBy {
    pub id: Uuid,
    pub email: String,
}

/// The dialect the importer detected (or was told) and used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DialectView {
    /// `,` `;` `\t` or `|`.
    pub delimiter: String,
    /// Canonical encoding name: `UTF-8`, `windows-1251`, `windows-1252`, `UTF-16LE`, …
    pub encoding: String,
    /// `gzip` or `none`.
    pub compression: String,
    /// `by_name` (columns matched by header name), `positional` (no name recognised) or
    /// `explicit` (the upload's `columns=` mapping).
    #[cfg_attr(feature = "openapi", schema(example = "by_name"))]
    pub header: String,
    /// Where each of the five columns was found; missing optional ones are absent (NULL).
    pub columns: Vec<ColumnView>,
    /// Header cells that were ignored, and other remarks.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ColumnView {
    /// `email`, `first_name`, `last_name`, `phone` or `city`.
    pub column: String,
    /// The header cell as written.
    pub header: String,
    /// 1-based field position.
    pub position: usize,
}

/// A page of `GET /imports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub limit: i64,
    pub offset: i64,
    /// All of the jobs the query selects (the organization's, or with `mine=true` the
    /// caller's).
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's JSON read back: every field, the nulls, an unknown status and an unknown
    /// field (a newer API) tolerated.
    #[test]
    fn a_job_round_trips_and_tolerates_what_a_newer_api_adds() {
        let text = r#"{"id":"6f1c1f3e-52a4-4b8f-9d0e-2a1b3c4d5e6f","status":"done","mode":"upsert",
            "processed_rows":5,"inserted_rows":3,"updated_rows":0,"error_rows":2,
            "progress_percent":100.0,"file_name":"a.csv","file_size":120,
            "created_at":"2026-01-02T03:04:05Z","started_at":"2026-01-02T03:04:06Z",
            "finished_at":null,"error":null,"errors_report_available":true,"dry_run":false,
            "max_errors":null,"dialect":{"delimiter":";","encoding":"windows-1251",
            "compression":"none","header":"by_name","columns":[{"column":"email",
            "header":"E-mail","position":1}],"warnings":[]},
            "created_by":{"id":"6f1c1f3e-52a4-4b8f-9d0e-2a1b3c4d5e6f","email":"a@b.c"}}"#;
        let job: JobView = serde_json::from_str(text).unwrap();
        assert_eq!(job.status, Status::Done);
        assert_eq!(job.mode, Mode::Upsert);
        assert!(job.is_finished());
        assert_eq!(job.dialect.as_ref().unwrap().columns[0].position, 1);
        let again: JobView = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(again, job);

        let newer = text
            .replace("\"done\"", "\"archived\"")
            .replace("\"dry_run\"", "\"error_code\":null,\"dry_run\"");
        let job: JobView = serde_json::from_str(&newer).unwrap();
        assert_eq!(job.status, Status::Unknown);
        assert!(!job.is_finished());
    }
}
