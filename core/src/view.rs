//! The job rows as the API shows them: conversions into the shared JSON types of
//! `bulk_import_types` (the API serialises them, the CLI reads them).

use crate::{
    options::{Dialect, HeaderKind},
    ImportMode, JobRow, JobStatus,
};
use bulk_import_types::{ColumnView, CreatedBy, DialectView, JobView, Mode, Status};

impl From<JobStatus> for Status {
    /// The status users see: an upload in flight is already a `pending` job to them.
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Uploading | JobStatus::Pending => Status::Pending,
            JobStatus::Processing => Status::Processing,
            JobStatus::Done => Status::Done,
            JobStatus::Failed => Status::Failed,
            JobStatus::Cancelled => Status::Cancelled,
        }
    }
}

impl From<ImportMode> for Mode {
    fn from(m: ImportMode) -> Self {
        match m {
            ImportMode::InsertOnly => Mode::InsertOnly,
            ImportMode::Upsert => Mode::Upsert,
        }
    }
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
                HeaderKind::Explicit => "explicit",
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

impl From<&JobRow> for JobView {
    fn from(j: &JobRow) -> Self {
        JobView {
            id: j.id,
            status: match j.queued_at() {
                Some(_) => Status::Queued,
                None => j.status().into(),
            },
            queue_position: j.queued_at().map(i64::from),
            mode: j.mode().into(),
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
