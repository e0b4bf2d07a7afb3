//! Where imports run. `local` runs the importer binary as a child process of the API;
//! `kubernetes` creates an ImportJob resource that the operator runs. The API only calls
//! `submit` for a new job and `resume` once at start.

mod kubernetes;
mod local;

pub use kubernetes::KubernetesExecutor;
pub use local::LocalExecutor;

use futures_util::future::BoxFuture;
use uuid::Uuid;

pub trait Executor: Send + Sync + 'static {
    /// Hands over a `pending` job. Must be idempotent: a job submitted twice runs once.
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Picks up every `pending` or `processing` job (after a restart).
    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>>;

    /// Stops gracefully: running importers are asked to stop at a batch boundary; they
    /// resume from their checkpoint next time.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
