//! The bulk-import importer: claims a job (`bulk_import_core::repo::claim`), streams its CSV
//! object from storage, validates every row, loads batches with COPY (each batch, its
//! errors, the counters, the checkpoint and the claim's renewal in one transaction),
//! publishes progress to Redis, writes `errors.csv` and finishes the job only when the
//! checkpoint is at the end of the file. Exit codes are `bulk_import_core::exit`. See
//! docs/import-semantics.md for the rules.

pub mod batch;
mod claim;
pub mod copy;
pub mod decode;
pub mod dedupe;
pub mod dialect;
pub mod error_cap;
mod finish;
pub mod load;
pub mod local_file;
pub mod mapping;
pub mod outcome;
pub mod preview;
pub mod publish;
pub mod reader;
pub mod report;
pub mod run;
mod run_context;
pub mod source;
mod stream;
pub mod validate;

pub use outcome::{Outcome, RunError};
pub use run::run_job;

/// Process exit codes (the contract lives in core, shared with the executors).
pub use bulk_import_core::exit;
