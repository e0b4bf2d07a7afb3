//! The sweeper: every `SWEEP_INTERVAL_SECONDS` (default a minute), in every API process and
//! in both executor modes (the API owns uploads and submissions, so it also cleans up after
//! them; on Kubernetes the operator only runs what it is handed):
//! - hands `pending` jobs that nobody runs to the executor again (a submit lost with a
//!   crash, a client hanging up, the API server down), and `processing` jobs whose claim
//!   expired with no importer left to renew it; submitting is idempotent, and the claim
//!   decides who runs a job when several API replicas sweep;
//! - removes `uploading` reservations whose upload stopped heartbeating (`STALE_UPLOAD`)
//!   with their partial objects, so their keys can be used again;
//! - aborts multipart uploads (S3) or removes temporary files (fs) under this deployment's
//!   key prefix that stopped moving: started more than an hour ago and with nothing written
//!   for an hour (the newest part of a multipart upload, the temporary file's modification
//!   time). An upload older than that whose bytes still arrive is left alone.

use crate::{executor::Executor, upload::STALE_UPLOAD};
use bulk_import_core::{repo, Storage};
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// An unfinished multipart upload that has not moved (no part stored) for this long has no
/// writer left.
pub const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(3600);
/// A `pending` job untouched, or a claim expired, for this long has nobody running it.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60);

pub struct Sweeper {
    pub pool: PgPool,
    pub storage: Storage,
    pub executor: Arc<dyn Executor>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub resubmitted: usize,
    pub expired_reservations: usize,
    pub aborted_uploads: usize,
}

impl Sweeper {
    /// Sweeps every `every` until `stop`.
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let swept = self
                .sweep(ORPHAN_AGE, STALE_UPLOAD, ABANDONED_UPLOAD_AGE)
                .await;
            if swept != Swept::default() {
                tracing::info!(?swept, "sweep");
            }
        }
    }

    /// One sweep with the given ages; errors are logged and the rest goes on.
    pub async fn sweep(&self, orphan: Duration, stale: Duration, abandoned: Duration) -> Swept {
        let mut swept = Swept::default();
        match repo::list_orphaned(&self.pool, orphan).await {
            Ok(jobs) => {
                for job in jobs {
                    match self.executor.submit(job.id).await {
                        Ok(()) => swept.resubmitted += 1,
                        Err(e) => {
                            tracing::warn!(job_id = %job.id, error = format!("{e:#}"), "sweep: submit failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: listing orphaned jobs failed"),
        }
        match repo::expire_stale_uploads(&self.pool, stale).await {
            Ok(objects) => {
                swept.expired_reservations = objects.len();
                for object in objects {
                    if let Err(e) = self.storage.delete(&object).await {
                        tracing::warn!(%object, error = %e, "sweep: deleting a partial upload failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep: expiring reservations failed"),
        }
        match self.storage.clean_abandoned_uploads(abandoned).await {
            Ok(n) => swept.aborted_uploads = n,
            Err(e) => tracing::warn!(error = %e, "sweep: cleaning abandoned uploads failed"),
        }
        swept
    }
}
