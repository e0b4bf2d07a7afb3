//! `/health` (liveness), `/ready` (Postgres answers; Redis and storage reported) and
//! `/metrics`.
//!
//! Readiness answers for what the pod needs to serve: without Postgres no route but
//! `/health` works, so `/ready` is 503 and the pod leaves the Service. Redis and storage are
//! shared by every pod: taking all of them out of the Service for an outage of either would
//! turn a degraded feature into a total outage. So `/ready` stays 200 then, with
//! `"status": "degraded"` and a `degraded` list naming them (docs/api.md says which routes
//! answer 503 meanwhile).

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

/// Readiness: 200 when Postgres answers (`"status": "ready"`, or `"degraded"` with the list of
/// Redis and storage when they do not); 503 when Postgres does not.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "ready, or degraded: `degraded` names Redis or storage when they do not answer"),
              (status = 503, description = "Postgres does not answer")))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (db, redis, storage) =
        tokio::join!(postgres_up(&state), redis_up(&state), storage_up(&state));
    let checks = json!({"postgres": up(db), "redis": up(redis), "storage": up(storage)});
    let degraded: Vec<&str> = [("redis", redis), ("storage", storage)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if !db {
        let mut down = vec!["postgres"];
        down.extend(&degraded);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "code": "not_ready",
                "message": format!("unavailable: {}", down.join(", ")),
                "checks": checks,
            })),
        );
    }
    let status = if degraded.is_empty() {
        "ready"
    } else {
        "degraded"
    };
    (
        StatusCode::OK,
        Json(json!({"status": status, "degraded": degraded, "checks": checks})),
    )
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn postgres_up(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool)).await,
        Ok(Ok(_))
    )
}

async fn redis_up(state: &AppState) -> bool {
    let Some(mut conn) = state.redis_conn().await else {
        return false;
    };
    let ok = matches!(
        tokio::time::timeout(
            CHECK_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn)
        )
        .await,
        Ok(Ok(_))
    );
    if !ok {
        state.shared_redis.broken().await;
    }
    ok
}

async fn storage_up(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.storage.check()).await,
        Ok(Ok(()))
    )
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
