//! The `import_jobs` row as Rust sees it: the job, its status and mode enums (stored as text
//! with a CHECK constraint), its committed counters (`Totals`), job-level failure codes and
//! the object key layout. Every statement on the table is in `crate::repo`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// New emails are inserted; an email already present is an error row.
    InsertOnly,
    /// `INSERT … ON CONFLICT (email) DO UPDATE`: the last occurrence in the file wins.
    Upsert,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::InsertOnly => "insert_only",
            ImportMode::Upsert => "upsert",
        }
    }
}

impl FromStr for ImportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "insert_only" => Ok(ImportMode::InsertOnly),
            "upsert" => Ok(ImportMode::Upsert),
            other => Err(format!(
                "unknown mode {other:?}: expected insert_only or upsert"
            )),
        }
    }
}

impl fmt::Display for ImportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `uploading` is internal (the API is still streaming the file; it is shown as `pending`);
/// the others are the public life cycle `pending → processing → done | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Uploading,
    Pending,
    Processing,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Uploading => "uploading",
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The status users see: an upload in flight is already a `pending` job to them.
    pub fn public(self) -> JobStatus {
        match self {
            JobStatus::Uploading => JobStatus::Pending,
            other => other,
        }
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "uploading" => JobStatus::Uploading,
            "pending" => JobStatus::Pending,
            "processing" => JobStatus::Processing,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text columns with a CHECK constraint on the database side, enums on the Rust side.
macro_rules! text_enum {
    ($t:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $t {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $t {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> ::std::result::Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }
        impl sqlx::Encode<'_, sqlx::Postgres> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> ::std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}
pub(crate) use text_enum;
text_enum!(ImportMode);
text_enum!(JobStatus);

/// One row of `import_jobs`, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    /// The organization the job belongs to (`crate::accounts`): its members share it.
    pub org_id: i32,
    /// Who started it.
    pub user_id: Uuid,
    /// That user's email (read with the row, for the job JSON).
    pub created_by_email: Option<String>,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub mode: ImportMode,
    pub status: JobStatus,
    pub source_object: String,
    pub file_name: String,
    pub file_size: i64,
    pub processed_rows: i64,
    pub inserted_rows: i64,
    pub updated_rows: i64,
    pub error_rows: i64,
    pub checkpoint_offset: i64,
    pub checkpoint_line: i64,
    pub report_object: Option<String>,
    /// Stable code of a job-level failure (`JobError::code`); `error` is its safe message.
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    /// The importer that holds the job (`processing`) and until when, unless renewed.
    pub owner_id: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Options and dialect (issue 13; see `crate::options`).
    pub dry_run: bool,
    pub max_errors: Option<i64>,
    pub delimiter: Option<String>,
    pub encoding: Option<String>,
    /// The dialect used, as JSON (`crate::options::Dialect`); NULL until the first start.
    pub dialect: Option<String>,
    /// gzip uploads: where the next record starts in the decompressed stream.
    pub checkpoint_stream_offset: Option<i64>,
    /// The explicit column mapping asked for (`columns=`), as JSON (`ColumnMap::to_json`).
    pub columns: Option<String>,
    /// Its place in the queue for an importer slot (1 is next) while it waits
    /// (`crate::admission`); `None` when not queued.
    pub queue_position: Option<i32>,
}

/// A job's committed counters and checkpoint, as one batch transaction leaves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    pub processed_rows: i64,
    pub inserted_rows: i64,
    pub updated_rows: i64,
    pub error_rows: i64,
    pub checkpoint_offset: i64,
}

/// A job-level failure: a stable code and a safe message (`crate::job_error`).
pub use crate::job_error::JobError;

impl JobRow {
    pub fn mode(&self) -> ImportMode {
        self.mode
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Its queue position, while it is `pending` and waiting for an importer slot.
    pub fn queued_at(&self) -> Option<i32> {
        self.queue_position
            .filter(|_| self.status == JobStatus::Pending)
    }

    pub fn totals(&self) -> Totals {
        Totals {
            processed_rows: self.processed_rows,
            inserted_rows: self.inserted_rows,
            updated_rows: self.updated_rows,
            error_rows: self.error_rows,
            checkpoint_offset: self.checkpoint_offset,
        }
    }

    /// The options the job was created with.
    pub fn options(&self) -> crate::options::ImportOptions {
        crate::options::ImportOptions {
            dry_run: self.dry_run,
            max_errors: self.max_errors,
            delimiter: self.delimiter.as_deref().and_then(|d| d.bytes().next()),
            encoding: self.encoding.clone(),
            columns: self
                .columns
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
        }
    }

    /// The dialect the importer recorded, once it has started.
    pub fn dialect(&self) -> Option<crate::options::Dialect> {
        self.dialect
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
    }

    /// Bytes read of the file, as a percentage; 100 once the job is done.
    pub fn progress_percent(&self) -> f64 {
        if self.status() == JobStatus::Done {
            return 100.0;
        }
        progress_percent(self.checkpoint_offset, self.file_size)
    }
}

pub fn progress_percent(bytes_read: i64, file_size: i64) -> f64 {
    if file_size <= 0 {
        return 0.0;
    }
    let pct = bytes_read as f64 * 100.0 / file_size as f64;
    (pct.clamp(0.0, 100.0) * 10.0).round() / 10.0
}

/// Object keys: never derived from anything the client sent but ids. The layout (under the
/// deployment's `STORAGE_KEY_PREFIX`): `uploads/<user id>/<job id>.csv` for the file,
/// `reports/<job id>/errors.csv` for the report, `reports/<job id>/rows.csv` for the bad rows alone.
pub fn upload_key(user_id: Uuid, job_id: Uuid) -> String {
    format!("{UPLOADS_PREFIX}{user_id}/{job_id}.csv")
}

pub fn report_key(job_id: Uuid) -> String {
    format!("{REPORTS_PREFIX}{job_id}/errors.csv")
}

pub const UPLOADS_PREFIX: &str = "uploads/";
pub const REPORTS_PREFIX: &str = "reports/";

/// The upload fingerprint stored with an Idempotency-Key: the file's SHA-256 and the mode,
/// so that a replay with another file or mode is told apart from a plain retry.
pub fn fingerprint(
    sha256_hex: &str,
    mode: ImportMode,
    options: &crate::options::ImportOptions,
) -> String {
    format!("{sha256_hex}:{mode}{}", options.fingerprint_suffix())
}

/// Whether `key` is an upload key of this job (`uploads/<user id>/<job id>.csv`): what the
/// operator checks before it deletes an object named by an ImportJob, and what the CRD's
/// validation rules say too.
pub fn is_upload_key_of(job_id: Uuid, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(UPLOADS_PREFIX) else {
        return false;
    };
    let Some((user, file)) = rest.split_once('/') else {
        return false;
    };
    is_canonical_uuid(user) && file == format!("{job_id}.csv")
}

/// The lowercase hyphenated form `Uuid` prints, and nothing else.
pub fn is_canonical_uuid(s: &str) -> bool {
    s.parse::<Uuid>().is_ok_and(|u| u.to_string() == s)
}

/// The bad rows alone, in the five standard columns (`GET /imports/{id}/errors?format=rows`).
pub fn rows_report_key(job_id: Uuid) -> String {
    format!("{REPORTS_PREFIX}{job_id}/rows.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_round_trip() {
        for m in [ImportMode::InsertOnly, ImportMode::Upsert] {
            assert_eq!(m.as_str().parse::<ImportMode>().unwrap(), m);
        }
        assert!("merge".parse::<ImportMode>().is_err());
    }

    #[test]
    fn upload_keys_belong_to_their_job() {
        let (user, job) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(is_upload_key_of(job, &upload_key(user, job)));
        for bad in [
            format!("uploads/{user}/{}.csv", Uuid::new_v4()),
            format!("uploads/{job}.csv"),
            format!("uploads/../{job}.csv"),
            format!("uploads/{user}/x/{job}.csv"),
            format!("reports/{user}/{job}.csv"),
            format!("uploads/{}/{job}.csv", user.to_string().to_uppercase()),
            format!("/uploads/{user}/{job}.csv"),
        ] {
            assert!(!is_upload_key_of(job, &bad), "{bad}");
        }
    }

    #[test]
    fn percent_is_clamped_and_rounded() {
        assert_eq!(progress_percent(0, 0), 0.0);
        assert_eq!(progress_percent(1, 3), 33.3);
        assert_eq!(progress_percent(5, 3), 100.0);
    }
}
