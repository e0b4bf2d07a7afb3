//! Shared state of the HTTP handlers.

use crate::{auth::Tokens, executor::Executor, metrics::Metrics};
use bulk_import_core::{Settings, Storage};
use sqlx::PgPool;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub redis: Option<redis::Client>,
    pub storage: Storage,
    pub tokens: Tokens,
    pub executor: Arc<dyn Executor>,
    pub metrics: Metrics,
}

impl AppState {
    /// A Redis connection, or `None` when Redis does not answer within a second.
    pub async fn redis_conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = self.redis.as_ref()?;
        match tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(c)) => Some(c),
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
}
