//! Where imports run. `local` runs the importer binary as a child process of the API;
//! `kubernetes` creates an ImportJob resource that the operator runs. The API calls `submit`
//! for a new or retried job, `cancel` after a cancel, and `resume` once at start.

mod kubernetes;
mod local;
mod slots;

pub use kubernetes::KubernetesExecutor;
pub use local::LocalExecutor;

use futures_util::future::BoxFuture;
use uuid::Uuid;

pub trait Executor: Send + Sync + 'static {
    /// Hands over a `pending` job. Must be idempotent: a job submitted twice runs once.
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Tells the executor a job was cancelled (its row is `cancelled` already, which alone
    /// stops a running importer at its next batch boundary). Kubernetes: sets the ImportJob's
    /// `spec.cancelRequested`, so the operator stops the Job at once. Local: nothing more.
    fn cancel(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        let _ = job_id;
        Box::pin(async { Ok(()) })
    }

    /// Picks up every `pending` or `processing` job (after a restart).
    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>>;

    /// Stops gracefully: running importers are asked to stop at a batch boundary; they
    /// resume from their checkpoint next time.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
