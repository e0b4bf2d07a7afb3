//! Applies batches, each in one transaction: its customer rows, its error rows, the job
//! counters and the checkpoint, so that a crash at any point loses nothing and repeats
//! nothing. The rooms:
//! - [`pipeline`]: the [`Loader`], batches applied two at a time on two connections, still
//!   committing in file order;
//! - [`task`]: one batch applied in a task of its own, beside the batch before it;
//! - [`stage`]: one batch's transaction — its row work by mode, its error rows, its commit;
//! - [`insert_only`], [`upsert`]: the two modes' row work, with duplicate detection;
//! - [`dry_run`]: the same checks, no customer row;
//! - [`error`]: why a batch was not applied.

pub mod dry_run;
mod error;
mod insert_only;
mod pipeline;
mod stage;
mod task;
mod upsert;

pub use error::LoadError;
pub use pipeline::Loader;
