//! Publishes progress snapshots off the import's path: the loader only stores the latest
//! snapshot; background tasks send it to Redis (live streaming) and, on Kubernetes, into the
//! ImportJob's status (server-side apply under the importer's own field manager, at most
//! once a second). Redis or the API server being slow or down never blocks or fails an
//! import (snapshots are dropped, reconnects are spaced out).

use bulk_import_core::progress::{channel, ProgressSnapshot};
use std::time::{Duration, Instant};
use tokio::{sync::watch, task::JoinHandle};

const TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

pub struct Publisher {
    tx: watch::Sender<Option<ProgressSnapshot>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The ImportJob this importer runs for, when the operator started it (`IMPORTJOB_NAME`).
pub struct ImportJobRef {
    pub name: String,
    pub namespace: String,
}

impl Publisher {
    pub fn spawn(redis_url: &str, import_job: Option<ImportJobRef>) -> Publisher {
        let (tx, rx) = watch::channel(None);
        let client = redis::Client::open(redis_url).ok();
        if client.is_none() {
            tracing::warn!("REDIS_URL is not a valid Redis URL; progress will not be published");
        }
        let mut tasks = vec![tokio::spawn(run(client, rx.clone()))];
        if let Some(ij) = import_job {
            tasks.push(tokio::spawn(patch_status(ij, rx)));
        }
        Publisher { tx, tasks }
    }

    pub fn publish(&self, snapshot: ProgressSnapshot) {
        self.tx.send_replace(Some(snapshot));
    }

    /// Sends the last snapshot if it can within a few seconds, then stops.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(TIMEOUT * 3, futures_util::future::join_all(self.tasks)).await;
    }
}

async fn run(client: Option<redis::Client>, mut rx: watch::Receiver<Option<ProgressSnapshot>>) {
    let Some(client) = client else { return };
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut last_attempt: Option<Instant> = None;
    // `changed` still yields a value sent just before the sender was dropped.
    while rx.changed().await.is_ok() {
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        if conn.is_none() && last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT_EVERY) {
            last_attempt = Some(Instant::now());
            conn = match tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
                .await
            {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis unavailable; progress not published");
                    None
                }
                Err(_) => None,
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        let payload = serde_json::to_string(&snapshot).expect("snapshot serialises");
        let sent = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(channel(snapshot.job_id))
                .arg(payload)
                .query_async::<i64>(c),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            conn = None;
        }
    }
}

/// Mirrors snapshots into the ImportJob's status: counters and progress only (the operator
/// owns phase and conditions), at most once a second, always the latest.
async fn patch_status(ij: ImportJobRef, mut rx: watch::Receiver<Option<ProgressSnapshot>>) {
    use bulk_import_core::crd::{ImportJob, IMPORTER_MANAGER};
    use kube::api::{Api, Patch, PatchParams};
    let client = match bulk_import_core::crd::kube_client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes client; the ImportJob status will not show progress");
            return;
        }
    };
    let api: Api<ImportJob> = Api::namespaced(client, &ij.namespace);
    let params = PatchParams::apply(IMPORTER_MANAGER).force();
    while rx.changed().await.is_ok() {
        let Some(s) = rx.borrow_and_update().clone() else {
            continue;
        };
        let patch = serde_json::json!({
            "apiVersion": "bulkimport.dev/v1alpha1",
            "kind": "ImportJob",
            "status": {
                "processedRows": s.processed_rows,
                "insertedRows": s.inserted_rows,
                "updatedRows": s.updated_rows,
                "errorRows": s.error_rows,
                "progressPercent": s.progress_percent,
            }
        });
        match tokio::time::timeout(
            TIMEOUT * 2,
            api.patch_status(&ij.name, &params, &Patch::Apply(&patch)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "ImportJob status not updated"),
            Err(_) => tracing::debug!("ImportJob status update timed out"),
        }
        tokio::time::sleep(TIMEOUT).await;
    }
}
