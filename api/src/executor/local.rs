//! The local executor: one importer child process per job, at most
//! `LOCAL_MAX_CONCURRENT_IMPORTS` at once (the rest wait their turn). A child that dies
//! (crash, kill, temporary failure) is run again, up to `LOCAL_MAX_ATTEMPTS` runs, each
//! resuming from the checkpoint; then the job is failed with the reason. Exit code 2 means
//! the importer itself recorded a permanent failure.

use super::Executor;
use anyhow::Context;
use bulk_import_core::Settings;
use futures_util::future::BoxFuture;
use sqlx::PgPool;
use std::{
    collections::HashSet,
    path::PathBuf,
    process::ExitStatus,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{process::Command, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

const PERMANENT_FAILURE: i32 = 2;

pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    bin: PathBuf,
    pool: PgPool,
    slots: Semaphore,
    max_attempts: u32,
    active: Mutex<HashSet<Uuid>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// `IMPORTER_BIN`, else `bulk-import-importer` beside the running executable, else on PATH.
fn importer_bin(settings: &Settings) -> PathBuf {
    if let Some(bin) = &settings.api.importer_bin {
        return bin.clone();
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("bulk-import-importer");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("bulk-import-importer")
}

impl LocalExecutor {
    pub fn new(settings: &Settings, pool: PgPool) -> LocalExecutor {
        let bin = importer_bin(settings);
        tracing::info!(importer = %bin.display(), slots = settings.api.local_max_concurrent, "local executor");
        LocalExecutor {
            inner: Arc::new(Inner {
                bin,
                pool,
                slots: Semaphore::new(settings.api.local_max_concurrent),
                max_attempts: settings.api.local_max_attempts,
                active: Mutex::default(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }
}

impl Executor for LocalExecutor {
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            if !self.inner.active.lock().expect("lock").insert(job_id) {
                return Ok(());
            }
            let inner = self.inner.clone();
            self.inner.tasks.spawn(async move {
                inner.run(job_id).await;
                inner.active.lock().expect("lock").remove(&job_id);
            });
            Ok(())
        })
    }

    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async move {
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM import_jobs WHERE status IN ('pending', 'processing') ORDER BY created_at",
            )
            .fetch_all(&self.inner.pool)
            .await
            .context("listing unfinished jobs")?;
            for id in &ids {
                self.submit(*id).await?;
            }
            Ok(ids.len())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.stop.cancel();
            self.inner.tasks.close();
            self.inner.tasks.wait().await;
        })
    }
}

impl Inner {
    async fn run(&self, job_id: Uuid) {
        let _slot = tokio::select! {
            slot = self.slots.acquire() => slot.expect("semaphore open"),
            _ = self.stop.cancelled() => return,
        };
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            match self.run_once(job_id).await {
                Ok(None) => return, // stopping
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) if status.code() == Some(PERMANENT_FAILURE) => return,
                Ok(Some(status)) => last = describe(status),
                Err(e) => last = format!("could not start the importer: {e}"),
            }
            tracing::warn!(%job_id, attempt, reason = %last, "importer run ended early");
            if attempt < self.max_attempts {
                let backoff = Duration::from_secs(u64::from(attempt));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.stop.cancelled() => return,
                }
            }
        }
        let failure = bulk_import_core::job_error::JobError::importer_stopped(self.max_attempts)
            .with_detail(format!("last: {last}"));
        failure.log(job_id);
        let reason = failure.stored();
        if let Err(e) = bulk_import_core::job::mark_failed(&self.pool, job_id, &reason).await {
            tracing::error!(%job_id, error = %e, "could not record the failure");
        }
    }

    /// One run of the importer; `None` when the executor is stopping (the child was asked to
    /// stop at a batch boundary and has exited).
    async fn run_once(&self, job_id: Uuid) -> std::io::Result<Option<ExitStatus>> {
        let mut child = Command::new(&self.bin)
            .arg("--job-id")
            .arg(job_id.to_string())
            .kill_on_drop(false)
            .spawn()?;
        tokio::select! {
            status = child.wait() => status.map(Some),
            _ = self.stop.cancelled() => {
                if let Some(pid) = child.id() {
                    // SIGTERM: the importer finishes or rolls back its batch and exits.
                    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                }
                let _ = tokio::time::timeout(Duration::from_secs(25), child.wait()).await;
                Ok(None)
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".into(),
    }
}
