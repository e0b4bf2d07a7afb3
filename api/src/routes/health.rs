//! `/health` (liveness), `/ready` (Postgres, Redis and storage answer) and `/metrics`.

use crate::state::AppState;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use bulk_import_core::{repo, JobStatus};
use prometheus::Encoder;
use serde_json::json;
use std::time::Duration;

/// `/health`, `/ready`, and `/metrics` unless it has a listener of its own.
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    if with_metrics {
        router.merge(metrics_router())
    } else {
        router
    }
}

/// `/metrics` alone (`METRICS_BIND_ADDR`).
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Liveness: 200 while the process serves requests.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when Postgres, Redis and storage answer; 503 naming those that do not.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "a dependency is down")))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(2);
    let db = async {
        matches!(
            tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool)).await,
            Ok(Ok(_))
        )
    };
    let redis = async {
        let Some(mut conn) = state.redis_conn().await else {
            return false;
        };
        let ok = matches!(
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                .await,
            Ok(Ok(_))
        );
        if !ok {
            state.shared_redis.broken().await;
        }
        ok
    };
    let storage = async {
        matches!(
            tokio::time::timeout(timeout, state.storage.check()).await,
            Ok(Ok(()))
        )
    };
    let (db, redis, storage) = tokio::join!(db, redis, storage);
    let checks = json!({"postgres": up(db), "redis": up(redis), "storage": up(storage)});
    let failed: Vec<&str> = [("postgres", db), ("redis", redis), ("storage", storage)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "code": "not_ready",
                "message": format!("unavailable: {}", failed.join(", ")),
                "checks": checks,
            })),
        )
    }
}

fn up(ok: bool) -> &'static str {
    if ok {
        "up"
    } else {
        "down"
    }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let counts = repo::count_by_status(&state.pool).await.unwrap_or_default();
    for status in [
        JobStatus::Uploading,
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let n = counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        state
            .metrics
            .imports
            .with_label_values(&[status.as_str()])
            .set(n);
    }
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&state.metrics.registry.gather(), &mut out)
        .expect("encode metrics");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
