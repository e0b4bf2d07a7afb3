//! The local executor: one importer child process per job, at most
//! `LOCAL_MAX_CONCURRENT_IMPORTS` at once and `MAX_ACTIVE_IMPORTS_PER_ORG` per
//! organization; the rest wait their turn, `queued` with their `queue_position`, and the
//! next slot goes round-robin across organizations, oldest first within one
//! (`super::slots`, the same admission as the operator's).
//!
//! How a child's exit is read (`bulk_import_core::exit`):
//! - 0: done, or the job had ended (cancelled, done) before: nothing more to do;
//! - 2: the importer recorded a permanent failure itself: nothing more to do;
//! - 75, "try later": another importer holds a live claim on the job (an importer left
//!   running by a killed API, another replica's), the database or storage is down, the report
//!   could not be written. Not a failed attempt: the executor waits (jittered back-off up to
//!   30 s) and runs it again, for as long as the job's deadline allows;
//! - anything else (a crash, a signal, 143 after a SIGTERM it did not send): a failed
//!   attempt; after `LOCAL_MAX_ATTEMPTS` of them the job is failed (`importer_stopped`).
//!
//! Each job gets the deadline a Kubernetes Job gets (`JOB_ACTIVE_DEADLINE_SECONDS`, counted
//! from the job's first start as recorded in the row, so a restarted API keeps it): past it
//! the child is stopped and the job failed with `deadline_exceeded`. A retry clears the
//! recorded start (`repo::retry`), so a retried job starts a fresh deadline.
//!
//! Two API replicas with `EXECUTOR=local` on one database are safe: both may start an
//! importer for the same job, but only the one holding the claim writes; the other waits and
//! exits 75 until the job ends.

use super::{slots::Slots, Executor};
use anyhow::Context;
use bulk_import_core::{
    exit,
    job::JobError,
    repo,
    retry::{retry, Policy},
    Settings,
};
use chrono::Utc;
use futures_util::future::BoxFuture;
use sqlx::PgPool;
use std::{
    collections::HashSet,
    path::PathBuf,
    process::ExitStatus,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{process::Command, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

/// How long a child asked to stop (SIGTERM) may take to finish its batch.
const STOP_GRACE: Duration = Duration::from_secs(25);

pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    bin: PathBuf,
    pool: PgPool,
    slots: Arc<Slots>,
    max_attempts: u32,
    deadline: Duration,
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
                slots: Slots::new(
                    settings.api.local_max_concurrent,
                    settings.max_active_imports_per_org,
                ),
                max_attempts: settings.api.local_max_attempts,
                deadline: settings.job_active_deadline,
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
            let jobs = repo::list_unfinished(&self.inner.pool)
                .await
                .context("listing unfinished jobs")?;
            for job in &jobs {
                self.submit(job.id).await?;
            }
            Ok(jobs.len())
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

/// How one run of the child ended.
enum Run {
    Exited(ExitStatus),
    /// The executor is stopping; the child was asked to stop at a batch boundary.
    Stopping,
    /// The job's deadline passed; the child was stopped.
    DeadlinePassed,
}

impl Inner {
    async fn run(&self, job_id: Uuid) {
        let Some(_slot) = self.slots.acquire(&self.pool, job_id, &self.stop).await else {
            return;
        };
        let mut failures = 0;
        let mut later = Policy::forever(Duration::from_secs(1), Duration::from_secs(30));
        let mut crashes = Policy::forever(Duration::from_secs(1), Duration::from_secs(10));
        loop {
            let Some(deadline) = self.deadline_of(job_id).await else {
                return; // the job ended, or is gone
            };
            let run = match self.run_once(job_id, deadline).await {
                Ok(run) => run,
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "could not start the importer");
                    let detail = format!("could not start the importer: {e}");
                    if !self.count_crash(job_id, &mut failures, detail).await
                        || !self.pause(crashes.next()).await
                    {
                        return;
                    }
                    continue;
                }
            };
            let status = match run {
                Run::Stopping => return,
                Run::DeadlinePassed => {
                    self.fail(job_id, self.deadline_exceeded()).await;
                    return;
                }
                Run::Exited(status) => status,
            };
            match status.code() {
                Some(exit::OK) | Some(exit::PERMANENT) => return,
                Some(exit::TEMPORARY) => {
                    tracing::info!(%job_id, "the importer cannot run the job now; trying again later");
                    if !self.pause(later.next()).await {
                        return;
                    }
                }
                _ => {
                    let last = describe(status);
                    tracing::warn!(%job_id, attempt = failures + 1, reason = %last, "importer run ended early");
                    if !self
                        .count_crash(job_id, &mut failures, format!("last: {last}"))
                        .await
                        || !self.pause(crashes.next()).await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Why a job whose run outlived the deadline failed.
    fn deadline_exceeded(&self) -> JobError {
        JobError::new(
            "deadline_exceeded",
            format!(
                "the import ran longer than its deadline of {} s",
                self.deadline.as_secs()
            ),
        )
    }

    /// Counts a run that crashed or could not start: once `LOCAL_MAX_ATTEMPTS` have, the job
    /// is failed (`importer_stopped`, with `detail`) and false is returned.
    async fn count_crash(&self, job_id: Uuid, failures: &mut u32, detail: String) -> bool {
        *failures += 1;
        if *failures < self.max_attempts {
            return true;
        }
        let error = JobError::importer_stopped(self.max_attempts).with_detail(detail);
        self.fail(job_id, error).await;
        false
    }

    /// Waits `delay` unless the executor stops first (false then).
    async fn pause(&self, delay: Option<Duration>) -> bool {
        let delay = delay.unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    /// When the job must be over, from its first start (now if it never started); `None`
    /// when it has ended or does not exist. A database error gives a deadline from now, the
    /// importer finds out the rest.
    async fn deadline_of(&self, job_id: Uuid) -> Option<Instant> {
        let job = retry(
            "reading the job",
            Policy::BRIEF,
            bulk_import_core::db::is_transient,
            || repo::get(&self.pool, job_id),
        )
        .await;
        let started = match job {
            Ok(Some(job)) if job.status().is_terminal() => return None,
            Ok(None) => return None,
            Ok(Some(job)) => job.started_at,
            Err(_) => None,
        };
        let elapsed = started
            .and_then(|t| (Utc::now() - t).to_std().ok())
            .unwrap_or_default();
        Some(Instant::now() + self.deadline.saturating_sub(elapsed))
    }

    async fn fail(&self, job_id: Uuid, error: JobError) {
        error.log(job_id);
        let recorded = retry(
            "recording the failure",
            Policy::MINUTE,
            bulk_import_core::db::is_transient,
            || repo::fail(&self.pool, job_id, &error),
        )
        .await;
        if let Err(e) = recorded {
            tracing::error!(%job_id, error = %e, "could not record the failure");
        }
    }

    /// One run of the importer, until it exits, the executor stops or the deadline passes.
    async fn run_once(&self, job_id: Uuid, deadline: Instant) -> std::io::Result<Run> {
        let mut child = Command::new(&self.bin)
            .arg("--job-id")
            .arg(job_id.to_string())
            .kill_on_drop(false)
            .spawn()?;
        let outcome = tokio::select! {
            status = child.wait() => return status.map(Run::Exited),
            _ = self.stop.cancelled() => Run::Stopping,
            _ = tokio::time::sleep_until(deadline) => Run::DeadlinePassed,
        };
        if let Some(pid) = child.id() {
            // SIGTERM: the importer finishes or rolls back its batch and exits.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        Ok(outcome)
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
