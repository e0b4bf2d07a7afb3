//! The kubernetes executor (`EXECUTOR=kubernetes`): each job becomes an `ImportJob` resource
//! in `KUBE_NAMESPACE`, which the operator turns into a Job. The API only creates (and on
//! start re-creates missing) ImportJobs, and asks a failed one to run again after a retry
//! (`spec.retries`); every read still comes from Postgres. A create that
//! fails (the API server down or throttling) is retried in the background while the job
//! waits, rather than holding the request or stranding the job until the next start.

use super::Executor;
use anyhow::Context;
use bulk_import_core::{
    crd::{hand_written_name, import_job_for, importjob_name_of, resource_name, ImportJob},
    phase::Phase,
    repo,
    retry::Policy,
    JobRow, JobStatus,
};
use futures_util::future::BoxFuture;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

pub struct KubernetesExecutor {
    api: Target,
    pool: PgPool,
}

/// Where ImportJobs go: the namespace, and the release label (`INSTANCE`) that tells this
/// release's operator they are its own.
#[derive(Clone)]
struct Target {
    api: Api<ImportJob>,
    instance: Option<String>,
}

/// One attempt at most this long: kube's client retries 503/429 with back-off for minutes,
/// which would hold the upload's response (and the API's start) that long.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_AT_MOST_EVERY: Duration = Duration::from_secs(60);

async fn create(target: &Target, job: &JobRow) -> anyhow::Result<()> {
    if hand_written_name(job).is_some() {
        // Its ImportJob was written by hand and made the row: never another one; a retry
        // asks that one to run again.
        return rerun_if_failed(target, job).await;
    }
    let ij = import_job_for(job, target.instance.as_deref());
    let api = &target.api;
    match tokio::time::timeout(CREATE_TIMEOUT, api.create(&PostParams::default(), &ij)).await {
        Err(_) => anyhow::bail!("creating the ImportJob timed out after {CREATE_TIMEOUT:?}"),
        Ok(Ok(_)) => {
            tracing::info!(job_id = %job.id, "ImportJob created");
            Ok(())
        }
        // Already there: submitting is idempotent — unless it is the ImportJob of a failed
        // run and the row is pending again (a retry): then it is asked to run again.
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => rerun_if_failed(target, job).await,
        Ok(Err(e)) => Err(e).context("creating the ImportJob"),
    }
}

/// A JSON merge patch of the ImportJob, bounded like a create; the outer error is the timeout.
async fn merge_patch(
    api: &Api<ImportJob>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<kube::Result<ImportJob>, tokio::time::error::Elapsed> {
    tokio::time::timeout(
        CREATE_TIMEOUT,
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)),
    )
    .await
}

/// A `pending` job whose ImportJob ended `Failed` was retried (`POST /imports/{id}/retry`
/// moved the row back to `pending`): raise `spec.retries` by one, and the operator runs it
/// again as the Job `<name>-retry-<n>`. Nothing to do when a raise is already waiting
/// (`spec.retries` above `status.retries`) or the ImportJob has not failed. The patch carries
/// the resourceVersion it was computed from, so two raises at once cannot collapse into one
/// or count twice: the loser re-reads.
async fn rerun_if_failed(target: &Target, job: &JobRow) -> anyhow::Result<()> {
    if job.status() != JobStatus::Pending {
        return Ok(());
    }
    let name = importjob_name_of(job);
    for _ in 0..5 {
        let ij = tokio::time::timeout(CREATE_TIMEOUT, target.api.get(&name))
            .await
            .context("reading the ImportJob timed out")?
            .context("reading the ImportJob")?;
        let status = ij.status.clone().unwrap_or_default();
        let requested = ij.spec.retries.unwrap_or(0);
        if status.phase.as_deref().and_then(Phase::parse) != Some(Phase::Failed)
            || requested > status.retries.unwrap_or(0)
        {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": ij.metadata.resource_version},
            "spec": {"retries": requested + 1},
        });
        match merge_patch(&target.api, &name, &patch)
            .await
            .context("asking the ImportJob to run again timed out")?
        {
            Ok(_) => {
                tracing::info!(job_id = %job.id, retries = requested + 1, "ImportJob asked to run again");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).context("asking the ImportJob to run again"),
        }
    }
    anyhow::bail!("the ImportJob kept changing while it was asked to run again")
}

impl KubernetesExecutor {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        instance: Option<String>,
        pool: PgPool,
    ) -> KubernetesExecutor {
        KubernetesExecutor {
            api: Target {
                api: Api::namespaced(client, namespace),
                instance,
            },
            pool,
        }
    }

    /// Keeps trying in the background while the job waits (the API server restarting or
    /// throttling): a job must not wait for the next restart of this process.
    fn retry_later(&self, job: JobRow) {
        let (api, pool) = (self.api.clone(), self.pool.clone());
        tokio::spawn(async move {
            let delays = Policy::forever(Duration::from_secs(1), RETRY_AT_MOST_EVERY);
            for delay in delays {
                tokio::time::sleep(delay).await;
                match repo::get(&pool, job.id).await {
                    Ok(Some(j))
                        if matches!(j.status(), JobStatus::Pending | JobStatus::Processing) => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = %e, "cannot read the job; retrying");
                        continue;
                    }
                }
                match create(&api, &job).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = format!("{e:#}"), "ImportJob not created yet; retrying")
                    }
                }
            }
        });
    }
}

impl Executor for KubernetesExecutor {
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let job = repo::get(&self.pool, job_id)
                .await?
                .context("job row not found")?;
            let created = create(&self.api, &job).await;
            if created.is_err() {
                self.retry_later(job);
            }
            created
        })
    }

    fn cancel(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let patch = serde_json::json!({"spec": {"cancelRequested": true}});
            let name = match repo::get(&self.pool, job_id).await? {
                Some(job) => importjob_name_of(&job),
                None => resource_name(job_id),
            };
            match merge_patch(&self.api.api, &name, &patch)
                .await
                .context("asking the ImportJob to cancel timed out")?
            {
                Ok(_) => {
                    tracing::info!(%job_id, "ImportJob asked to cancel");
                    Ok(())
                }
                // No ImportJob (not created yet, or deleted): the cancelled row is all there is.
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e).context("asking the ImportJob to cancel"),
            }
        })
    }

    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async move {
            let jobs = repo::list_unfinished(&self.pool).await?;
            let count = jobs.len();
            for job in jobs {
                if let Err(e) = create(&self.api, &job).await {
                    tracing::warn!(job_id = %job.id, error = format!("{e:#}"), "ImportJob not created; retrying in the background");
                    self.retry_later(job);
                }
            }
            Ok(count)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Imports run in the cluster, not in this process.
        Box::pin(async {})
    }
}
