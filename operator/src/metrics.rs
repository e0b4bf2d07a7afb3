//! Prometheus metrics and the operator's small HTTP server (`/health`, `/ready`, `/metrics`).
//! No per-object labels: counts by phase only.

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, IntCounter, IntGaugeVec, Opts, Registry};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounter,
    pub jobs_by_phase: IntGaugeVec,
    pub leader: prometheus::IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles =
            IntCounter::new("operator_reconciles_total", "Reconciliations run").expect("metric");
        let failures = IntCounter::new(
            "operator_reconcile_failures_total",
            "Reconciliations that failed",
        )
        .expect("metric");
        let jobs_by_phase = IntGaugeVec::new(
            Opts::new("operator_importjobs", "ImportJobs by phase"),
            &["phase"],
        )
        .expect("metric");
        let leader =
            prometheus::IntGauge::new("operator_leader", "1 while this replica holds the Lease")
                .expect("metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(jobs_by_phase.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(m).expect("register");
        }
        Metrics {
            registry,
            reconciles,
            failures,
            jobs_by_phase,
            leader,
        }
    }
}

#[derive(Clone)]
pub struct Health {
    pub metrics: Metrics,
    /// The controller's cache of ImportJobs, once it runs (only on the leader).
    pub importjobs:
        Arc<std::sync::OnceLock<kube::runtime::reflector::Store<bulk_import_core::crd::ImportJob>>>,
    /// Set once the operator is connected and (leader or standby) running.
    pub ready: Arc<AtomicBool>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    if let Some(store) = h.importjobs.get() {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for phase in ["Pending", "Running", "Complete", "Failed", "Invalid"] {
            counts.insert(phase.into(), 0);
        }
        for ij in store.state() {
            let phase = ij
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into());
            *counts.entry(phase).or_default() += 1;
        }
        for (phase, n) in counts {
            h.metrics.jobs_by_phase.with_label_values(&[&phase]).set(n);
        }
    }
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&h.metrics.registry.gather(), &mut out)
        .expect("encode");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
