//! Types and clients shared by the bulk-import binaries: settings, the job row, the storage
//! client, progress snapshots, e-mail validation and database helpers.

pub mod crd;
pub mod db;
pub mod email;
pub mod hashing;
pub mod job;
pub mod job_error;
pub mod limits;
pub mod progress;
pub mod settings;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use email::Email;
pub use job::{ImportMode, Job, JobStatus};
pub use settings::Settings;
pub use storage::Storage;
