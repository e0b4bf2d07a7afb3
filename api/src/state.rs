//! Shared state of the HTTP handlers.

use crate::{
    auth::{Hasher, Tokens},
    executor::Executor,
    metrics::Metrics,
    progress_hub::ProgressHub,
    quota::{Caps, Slots},
};
use bulk_import_core::{Settings, Storage};
use redis::aio::MultiplexedConnection;
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub redis: Option<redis::Client>,
    /// One multiplexed Redis connection shared by `/ready` and the login limiter.
    pub shared_redis: SharedRedis,
    pub storage: Storage,
    pub tokens: Tokens,
    pub hasher: Hasher,
    pub executor: Arc<dyn Executor>,
    pub metrics: Metrics,
    /// Uploads streaming now (`UPLOADS_MAX_PER_USER`, `UPLOADS_MAX_CONCURRENT`).
    pub upload_slots: Slots,
    /// Event streams open now (`EVENTS_MAX_PER_USER`, `EVENTS_MAX_CONCURRENT`).
    pub event_slots: Slots,
    /// The process's one Redis subscription to progress messages, fanned out to streams.
    pub progress: ProgressHub,
    /// Customer exports streaming now (`EXPORTS_MAX_CONCURRENT`).
    pub export_permits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state of a process: its settings and connections, and the bounds (slots, permits)
    /// the limits configure.
    pub fn new(
        settings: Settings,
        pool: PgPool,
        redis: Option<redis::Client>,
        storage: Storage,
        executor: Arc<dyn Executor>,
    ) -> AppState {
        let limits = &settings.limits;
        let caps = |per_user, per_org, total, reserved| Caps {
            per_user,
            per_org,
            total,
            reserved,
        };
        AppState {
            tokens: Tokens::new(&settings),
            hasher: Hasher::new(limits.hash_concurrency, limits.hash_queue_timeout),
            upload_slots: Slots::new(caps(
                limits.uploads_max_per_user,
                limits.fair.uploads_max_per_org,
                limits.uploads_max_concurrent,
                limits.fair.uploads_reserved,
            )),
            event_slots: Slots::new(caps(
                limits.events_max_per_user,
                limits.fair.events_max_per_org,
                limits.events_max_concurrent,
                limits.fair.events_reserved,
            )),
            export_permits: Arc::new(tokio::sync::Semaphore::new(
                settings.api.exports_max_concurrent,
            )),
            progress: ProgressHub::start(redis.clone()),
            shared_redis: SharedRedis::new(redis.clone()),
            settings: Arc::new(settings),
            pool,
            redis,
            storage,
            executor,
            metrics: Metrics::default(),
        }
    }
}

/// A lazily (re)opened multiplexed Redis connection: one per API process instead of one per
/// request. Commands on it time out after 500 ms; a failed command drops it
/// ([`SharedRedis::broken`]) and the next caller reconnects (at most one connect at a time).
#[derive(Clone)]
pub struct SharedRedis {
    client: Option<redis::Client>,
    conn: Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

impl SharedRedis {
    pub fn new(client: Option<redis::Client>) -> SharedRedis {
        SharedRedis {
            client,
            conn: Arc::default(),
        }
    }

    /// The connection, or `None` when Redis does not answer within a second.
    pub async fn get(&self) -> Option<MultiplexedConnection> {
        let client = self.client.as_ref()?;
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Some(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_millis(500));
        match tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis unavailable");
                None
            }
            Err(_) => {
                tracing::warn!("redis connection timed out");
                None
            }
        }
    }

    /// A command failed: the next [`SharedRedis::get`] opens a new connection.
    pub async fn broken(&self) {
        *self.conn.lock().await = None;
    }
}

impl AppState {
    /// The shared Redis connection, or `None` when Redis is down.
    pub async fn redis_conn(&self) -> Option<MultiplexedConnection> {
        self.shared_redis.get().await
    }
}
