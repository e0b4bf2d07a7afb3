//! Publishes progress snapshots off the import's path: the loader only stores the latest
//! snapshot; a background task sends it to Redis (live streaming). Redis being slow or down
//! never blocks or fails an import (snapshots are dropped, reconnects are spaced out).
//!
//! The importer has no Kubernetes credentials: on Kubernetes the operator mirrors progress
//! from the Postgres row into the ImportJob's status.

use bulk_import_core::progress::{channel, ProgressSnapshot};
use std::time::{Duration, Instant};
use tokio::{sync::watch, task::JoinHandle};

const TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

pub struct Publisher {
    tx: watch::Sender<Option<ProgressSnapshot>>,
    task: JoinHandle<()>,
}

impl Publisher {
    pub fn spawn(redis_url: &str) -> Publisher {
        let (tx, rx) = watch::channel(None);
        let client = redis::Client::open(redis_url).ok();
        if client.is_none() {
            tracing::warn!("REDIS_URL is not a valid Redis URL; progress will not be published");
        }
        let task = tokio::spawn(run(client, rx));
        Publisher { tx, task }
    }

    pub fn publish(&self, snapshot: ProgressSnapshot) {
        self.tx.send_replace(Some(snapshot));
    }

    /// Sends the last snapshot if it can within a few seconds, then stops.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(TIMEOUT * 3, self.task).await;
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
