//! The job JSON the API returns (the seed service's fields, extended).

use bulk_import_core::{
    options::{Dialect, HeaderKind},
    ImportMode, Job, JobStatus,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    /// `pending`, `processing`, `done`, `failed` or `cancelled`.
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
    /// Job-level failure reason (`failed` jobs): `"<code>: <message>"`.
    pub error: Option<String>,
    /// The stable code of `error` alone (`failed` jobs), e.g. `deadline_exceeded`.
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedBy {
    pub id: Uuid,
    pub email: String,
}

/// The dialect the importer detected (or was told) and used.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DialectView {
    /// `,` `;` `\t` or `|`.
    pub delimiter: String,
    /// Canonical encoding name: `UTF-8`, `windows-1251`, `windows-1252`, `UTF-16LE`, …
    pub encoding: String,
    /// `gzip` or `none`.
    pub compression: String,
    /// `by_name` (columns matched by header name) or `positional` (no name recognised).
    #[schema(example = "by_name")]
    pub header: String,
    /// Where each of the five columns was found; missing optional ones are absent (NULL).
    pub columns: Vec<ColumnView>,
    /// Header cells that were ignored, and other remarks.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ColumnView {
    /// `email`, `first_name`, `last_name`, `phone` or `city`.
    pub column: String,
    /// The header cell as written.
    pub header: String,
    /// 1-based field position.
    pub position: usize,
}

impl From<Dialect> for DialectView {
    fn from(d: Dialect) -> Self {
        DialectView {
            delimiter: d.delimiter,
            encoding: d.encoding,
            compression: d.compression,
            header: match d.header {
                HeaderKind::ByName => "by_name",
                HeaderKind::Positional => "positional",
            }
            .to_string(),
            columns: d
                .columns
                .into_iter()
                .map(|c| ColumnView {
                    column: c.column,
                    header: c.header,
                    position: c.position,
                })
                .collect(),
            warnings: d.warnings,
        }
    }
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
            error_code: j.error_code.clone(),
            errors_report_available: j.report_object.is_some(),
            dry_run: j.dry_run,
            max_errors: j.max_errors,
            dialect: j.dialect().map(DialectView::from),
            created_by: CreatedBy {
                id: j.user_id,
                email: j.created_by_email.clone().unwrap_or_default(),
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub limit: i64,
    pub offset: i64,
    /// All of the jobs the query selects (the organization's, or with `mine=true` the
    /// caller's).
    pub total: i64,
}
