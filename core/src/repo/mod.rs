//! The job repository: every statement on `import_jobs`, as named transitions of the job's
//! life. Nothing outside this module reads or writes the table.
//!
//! ```text
//!  reserve ──► uploading ──finish_upload──► pending ──claim──► processing ──finish──► done
//!                 │  ▲ heartbeat_upload                         │  ▲ renew, commit_batch
//!                 │  └ take_over_stale                          ├──fail──► failed ──retry──► pending
//!   release, expire_stale_uploads (row deleted)                 └──cancel─► cancelled
//! ```
//!
//! Each transition is one statement (or runs inside the caller's batch transaction) with its
//! guard: the status it starts from, the owner of the claim, the checkpoint. Queries are
//! checked at compile time against the migrations (`sqlx::query!`, offline data in `.sqlx/`,
//! regenerated and checked by `scripts/sqlx-prepare.sh`).
//!
//! Ownership: an importer `claim`s a job with its own id and a lease; every batch it commits
//! checks that it still owns the job and renews the lease in the same transaction, and so do
//! `renew` (its heartbeat) and `finish`. A claim is taken from another owner only when that
//! owner's lease has expired or when the caller knows it is dead (`Takeover::OwnerGone`: it
//! holds the job's advisory lock, which a live importer keeps for its whole run). A Postgres
//! restart drops advisory locks, never the row, so it cannot make two writers.
//!
//! The statements live in one file per part of the life: `reads`, `upload` (the API),
//! `queue` (admission), `running` (the importer), `ending`, and `kube` (the imports an operator
//! has taken, for its sweep); this module is their one public face.

mod ending;
mod kube;
mod queue;
mod reads;
mod running;
mod upload;

pub use ending::*;
pub use kube::*;
pub use queue::*;
pub use reads::*;
pub use running::*;
pub use upload::*;

/// What every statement here returns.
pub type Result<T> = sqlx::Result<T>;
