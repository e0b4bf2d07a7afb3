//! The `import_jobs` row, its status and mode enums, and the JSON view the API returns.

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
/// the others are the public life cycle `pending → processing → done | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Uploading,
    Pending,
    Processing,
    Done,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Uploading => "uploading",
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed)
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
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `import_jobs`, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub user_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    #[sqlx(try_from = "String")]
    pub mode: ModeColumn,
    #[sqlx(try_from = "String")]
    pub status: StatusColumn,
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
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Column adapters: the database keeps text with a CHECK constraint, Rust keeps the enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeColumn(pub ImportMode);
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusColumn(pub JobStatus);

impl TryFrom<String> for ModeColumn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(ModeColumn)
    }
}

impl TryFrom<String> for StatusColumn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(StatusColumn)
    }
}

impl Job {
    pub fn mode(&self) -> ImportMode {
        self.mode.0
    }

    pub fn status(&self) -> JobStatus {
        self.status.0
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

/// Columns for `SELECT … FROM import_jobs`, in the order `Job` expects.
pub const JOB_COLUMNS: &str = "id, user_id, idempotency_key, request_fingerprint, mode, status, \
     source_object, file_name, file_size, processed_rows, inserted_rows, updated_rows, error_rows, \
     checkpoint_offset, checkpoint_line, report_object, error, attempts, created_at, started_at, \
     finished_at, updated_at";

pub async fn fetch_job(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as::<_, Job>(&format!(
        "SELECT {JOB_COLUMNS} FROM import_jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Records a job-level failure unless the job already ended (a recorded outcome wins).
/// Returns whether the row changed.
pub async fn mark_failed(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE import_jobs SET status = 'failed', error = $2, finished_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Object keys: never derived from anything the client sent but ids.
pub fn upload_key(user_id: Uuid, job_id: Uuid) -> String {
    format!("uploads/{user_id}/{job_id}.csv")
}

pub fn report_key(job_id: Uuid) -> String {
    format!("reports/{job_id}/errors.csv")
}

/// Whether `key` is an upload key of this job (`uploads/<user id>/<job id>.csv`): what the
/// operator checks before it deletes an object named by an ImportJob, and what the CRD's
/// validation rules say too.
pub fn is_upload_key_of(job_id: Uuid, key: &str) -> bool {
    let Some(rest) = key.strip_prefix("uploads/") else {
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
