//! Prometheus metrics and the operator's small HTTP server (`/health`, `/ready`, `/metrics`).
//! No per-object labels: counts by phase and reason only.

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use bulk_import_core::phase::Phase;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// How long the ImportJob watch may keep failing before `/ready` says so.
pub const WATCH_STALL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounter,
    pub jobs_by_phase: IntGaugeVec,
    pub leader: prometheus::IntGauge,
    /// `operator_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `operator_imports_finished_total{phase, reason}`: each import once, when its status
    /// first says it ended.
    pub imports_finished: IntCounterVec,
    /// Since when the ImportJob watch has been failing (None: it works, or is not running).
    pub watch_failing_since: Arc<Mutex<Option<Instant>>>,
}

impl Metrics {
    /// Notes one item of the ImportJob watch: an error starts (or continues) a failing
    /// stretch, anything else ends it.
    pub fn note_watch(&self, ok: bool) {
        let mut since = self.watch_failing_since.lock().expect("lock");
        match (ok, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// Whether the ImportJob watch has been failing for `WATCH_STALL` or longer at `now`.
    pub fn watch_stalled(&self, now: Instant) -> bool {
        self.watch_failing_since
            .lock()
            .expect("lock")
            .is_some_and(|since| now.duration_since(since) >= WATCH_STALL)
    }
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
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "operator_reconcile_duration_seconds",
                "How long a reconciliation took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("metric");
        let imports_finished = IntCounterVec::new(
            Opts::new(
                "operator_imports_finished_total",
                "Imports that ended, by phase and reason",
            ),
            &["phase", "reason"],
        )
        .expect("metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(jobs_by_phase.clone()),
            Box::new(leader.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(imports_finished.clone()),
        ] {
            registry.register(m).expect("register");
        }
        Metrics {
            registry,
            reconciles,
            failures,
            jobs_by_phase,
            leader,
            reconcile_duration,
            imports_finished,
            watch_failing_since: Arc::default(),
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
    if !h.ready.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if h.metrics.watch_stalled(Instant::now()) {
        // The leader cannot see ImportJobs: nothing it reports is current.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the ImportJob watch has stalled",
        )
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    if let Some(store) = h.importjobs.get() {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for phase in Phase::ALL {
            counts.insert(phase.as_str().into(), 0);
        }
        for ij in store.state() {
            let phase = ij
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| Phase::Pending.as_str().into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_for_long_enough_is_stalled_and_one_event_ends_it() {
        let m = Metrics::default();
        let now = Instant::now();
        assert!(!m.watch_stalled(now), "not running yet");
        m.note_watch(false);
        assert!(!m.watch_stalled(Instant::now()), "one error is not a stall");
        m.note_watch(false);
        assert!(
            m.watch_stalled(Instant::now() + WATCH_STALL),
            "failing for WATCH_STALL"
        );
        m.note_watch(true);
        assert!(
            !m.watch_stalled(Instant::now() + WATCH_STALL * 2),
            "working again"
        );
    }

    #[tokio::test]
    async fn ready_says_when_the_watch_has_stalled() {
        let m = Metrics::default();
        let health = Health {
            metrics: m.clone(),
            importjobs: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
        };
        let status = |h: Health| async move { ready(State(h)).await.into_response().status() };
        assert_eq!(status(health.clone()).await, StatusCode::OK);
        *m.watch_failing_since.lock().unwrap() = Some(Instant::now() - WATCH_STALL);
        assert_eq!(
            status(health.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.note_watch(true);
        assert_eq!(status(health).await, StatusCode::OK);
    }
}
