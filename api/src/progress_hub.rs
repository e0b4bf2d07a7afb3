//! The API process's one Redis subscription to progress messages, fanned out to the event
//! streams (`routes::events`).

use bulk_import_core::progress::channel;
use futures_util::StreamExt;
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The API process's one Redis subscription to every job's progress channel; each message
/// wakes the streams of that job.
#[derive(Clone)]
pub struct ProgressHub {
    tx: broadcast::Sender<Uuid>,
    subscribed: Arc<AtomicBool>,
}

impl ProgressHub {
    /// Starts the subscription task (it reconnects every second while Redis is down).
    pub fn start(client: Option<redis::Client>) -> ProgressHub {
        let (tx, _) = broadcast::channel(1024);
        let hub = ProgressHub {
            tx,
            subscribed: Arc::default(),
        };
        if let Some(client) = client {
            tokio::spawn(hub.clone().run(client));
        }
        hub
    }

    async fn run(self, client: redis::Client) {
        let pattern = channel(Uuid::nil()).replace(&Uuid::nil().to_string(), "*");
        let prefix = pattern.trim_end_matches('*').to_string();
        loop {
            if let Ok(Ok(mut pubsub)) =
                tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub()).await
            {
                if pubsub.psubscribe(&pattern).await.is_ok() {
                    self.subscribed.store(true, Ordering::SeqCst);
                    tracing::debug!("progress hub subscribed");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let id = msg
                            .get_channel_name()
                            .strip_prefix(&prefix)
                            .and_then(|id| id.parse().ok());
                        if let Some(id) = id {
                            let _ = self.tx.send(id);
                        }
                    }
                    self.subscribed.store(false, Ordering::SeqCst);
                    tracing::warn!("progress hub lost its redis subscription; streams poll");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Woken with a job's id each time its progress is published.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }
}
