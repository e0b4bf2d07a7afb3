//! Types, clients and contracts shared by the bulk-import binaries: settings, the job row
//! and its repository (the only SQL on `import_jobs`), the storage client, progress
//! snapshots, e-mail validation, database helpers, the importer's exit codes and one retry
//! policy.

pub mod accounts;
pub mod admission;
pub mod column_map;
#[cfg(feature = "crd")]
pub mod crd;
pub mod db;
pub mod email;
pub mod exit;
pub mod hashing;
pub mod import_source;
pub mod job;
pub mod job_error;
pub mod limits;
pub mod options;
pub mod org_quota;
pub mod phase;
pub mod progress;
pub mod repo;
pub mod retry;
pub mod settings;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod vars;
pub mod view;

pub use email::Email;
pub use job::{ImportMode, JobRow, JobStatus};
pub use settings::Settings;
pub use storage::Storage;
