//! Prometheus metrics: requests by route template and status, latency by route, imports by
//! status (read from Postgres at scrape time). No per-object labels.

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::time::Instant;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub imports: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            ),
            &["route"],
        )
        .expect("metric");
        let imports = IntGaugeVec::new(Opts::new("imports", "Import jobs by status"), &["status"])
            .expect("metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        registry
            .register(Box::new(latency.clone()))
            .expect("register");
        registry
            .register(Box::new(imports.clone()))
            .expect("register");
        Metrics {
            registry,
            requests,
            latency,
            imports,
        }
    }
}

/// Middleware: counts and times every request under its route template (never the raw path,
/// which would carry ids).
pub async fn track(metrics: axum::extract::State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(req).await;
    metrics
        .latency
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}
