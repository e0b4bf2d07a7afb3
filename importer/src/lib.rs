//! The bulk-import importer: streams a CSV object from storage, validates every row, loads
//! batches with COPY (each batch, its errors, the counters and the checkpoint in one
//! transaction), publishes progress and writes `errors.csv`. See the README's "Import
//! semantics" for the rules.

pub mod copy;
pub mod decode;
pub mod dedupe;
pub mod dialect;
pub mod dry_run;
pub mod load;
pub mod publish;
pub mod reader;
pub mod report;
pub mod run;
pub mod source;
pub mod submit;
pub mod validate;

pub use run::{run_job, Outcome, RunError};

/// Process exit codes (the contract lives in core, shared with the executors).
pub use bulk_import_core::exit;
