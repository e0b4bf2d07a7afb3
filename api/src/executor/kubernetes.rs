//! The kubernetes executor (`EXECUTOR=kubernetes`): each job becomes an `ImportJob` resource
//! in `KUBE_NAMESPACE`, which the operator turns into a Job. The API only creates (and on
//! start re-creates missing) ImportJobs; every read still comes from Postgres.

use super::Executor;
use anyhow::Context;
use bulk_import_core::{
    crd::{import_job_for, ImportJob},
    job::{fetch_job, JOB_COLUMNS},
    Job,
};
use futures_util::future::BoxFuture;
use kube::api::{Api, PostParams};
use sqlx::PgPool;
use uuid::Uuid;

pub struct KubernetesExecutor {
    api: Api<ImportJob>,
    pool: PgPool,
}

impl KubernetesExecutor {
    pub fn new(client: kube::Client, namespace: &str, pool: PgPool) -> KubernetesExecutor {
        KubernetesExecutor {
            api: Api::namespaced(client, namespace),
            pool,
        }
    }

    async fn create(&self, job: &Job) -> anyhow::Result<()> {
        let ij = import_job_for(job);
        match self.api.create(&PostParams::default(), &ij).await {
            Ok(_) => {
                tracing::info!(job_id = %job.id, "ImportJob created");
                Ok(())
            }
            // Already there: submitting is idempotent.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e).context("creating the ImportJob"),
        }
    }
}

impl Executor for KubernetesExecutor {
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let job = fetch_job(&self.pool, job_id)
                .await?
                .context("job row not found")?;
            self.create(&job).await
        })
    }

    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async move {
            let jobs: Vec<Job> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM import_jobs WHERE status IN ('pending', 'processing') ORDER BY created_at"
            ))
            .fetch_all(&self.pool)
            .await?;
            for job in &jobs {
                self.create(job).await?;
            }
            Ok(jobs.len())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Imports run in the cluster, not in this process.
        Box::pin(async {})
    }
}
