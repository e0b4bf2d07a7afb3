//! The bulk-import REST API: auth (with its abuse limits), idempotent streamed uploads, job
//! status and control, live progress, error reports, health and metrics; the executors that
//! run imports (local child processes or ImportJobs) and the sweeper that hands unclaimed
//! work back to them and cleans up after dead uploads. `Application::build` wires it from
//! settings; `app` builds the router from a state, so tests can drive either. Every
//! statement on `import_jobs` goes through `bulk_import_core::repo`.

pub mod access;
pub mod auth;
pub mod client_ip;
pub mod connections;
pub mod customers;
pub mod error;
pub mod error_rows;
pub mod executor;
pub mod extract;
pub mod import_object;
pub mod job_quota;
pub mod metrics;
pub mod progress_hub;
pub mod quota;
pub mod rate_limit;
pub mod receive;
pub mod request_limits;
pub mod routes;
pub mod sniff;
pub mod state;
pub mod sweeper;
pub mod upload;
pub mod upload_limits;
pub mod upload_options;
pub mod view;

use anyhow::Context;
use axum::{
    http::{header, HeaderName, HeaderValue, Request},
    middleware, Router,
};
use bulk_import_core::{db, settings::Executor as ExecutorKind, Settings, Storage};
use executor::{Executor, KubernetesExecutor, LocalExecutor};
use sqlx::PgPool;
use state::AppState;
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// On every response. Fits the Swagger UI served at `/docs` (its scripts and styles are
/// files of this origin; it sets inline styles and uses `data:` images) and the web page at
/// `/` (its script and style are files of this origin, it has no inline script).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The request path as logged: a download link's token is a credential and never reaches
/// a log line.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/downloads/") {
        "/downloads/…"
    } else {
        path
    }
}
/// The access log: one line per request at `info`, target `access` (`RUST_LOG=info,access=off`
/// silences it), with the method, the route template (never the raw path: a download link's
/// token is a credential and ids are in the request span), the status, the time until the
/// answer's head in milliseconds (an event stream or a download may go on after it) and the
/// request id (`X-Request-Id`, the client's or a generated one, echoed in the answer).
async fn access_log(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    tracing::info!(
        target: "access",
        %method,
        route = %route.as_deref().unwrap_or("unmatched"),
        status = response.status().as_u16(),
        duration_ms = (start.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        %request_id,
        "request"
    );
    response
}

pub fn app(state: AppState) -> Router {
    let security = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    let mut router = Router::new()
        .merge(routes::health::router(
            state.settings.limits.metrics_bind_addr.is_none(),
        ))
        .merge(routes::auth::router())
        .merge(routes::imports::router())
        .merge(routes::preview::router())
        .merge(routes::control::router())
        .merge(routes::orgs::router())
        .merge(routes::import_prefixes::router())
        .merge(routes::customers::router())
        .merge(routes::events::router())
        .merge(routes::downloads::router())
        .merge(routes::docs::router())
        .merge(routes::web::router())
        .fallback(|| async { error::ApiError::not_found() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_limits::bound_body,
        ))
        .layer(middleware::from_fn(connections::per_client_requests))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(access_log))
        .with_state(state);
    for (name, value) in security {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %loggable_path(req.uri().path()), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    executor: Arc<dyn Executor>,
    /// `METRICS_BIND_ADDR`: `/metrics` on a listener of its own.
    metrics: Option<(TcpListener, Router)>,
    sweeper: (sweeper::Sweeper, std::time::Duration),
    /// The connection and request bounds `run_until` applies.
    state_limits: bulk_import_core::limits::Limits,
}

/// The executor `EXECUTOR` names: child processes, or an ImportJob per upload.
async fn executor_for(settings: &Settings, pool: &PgPool) -> anyhow::Result<Arc<dyn Executor>> {
    Ok(match settings.executor {
        ExecutorKind::Local => Arc::new(LocalExecutor::new(settings, pool.clone())),
        ExecutorKind::Kubernetes => {
            let client = bulk_import_core::crd::kube_client().await.context(
                "EXECUTOR=kubernetes: no Kubernetes configuration (in-cluster or KUBECONFIG)",
            )?;
            Arc::new(KubernetesExecutor::new(
                client,
                &settings.kube_namespace,
                settings.instance.clone(),
                pool.clone(),
            ))
        }
    })
}

impl Application {
    /// Connects to Postgres (and applies migrations), storage and Redis, resumes unfinished
    /// jobs and binds `BIND_ADDR` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        if settings.app_env == bulk_import_core::settings::AppEnv::Prod
            && settings.api.public_url.is_none()
        {
            // Links the API serves itself are never built from a client's Host header.
            anyhow::bail!("configuration error: PUBLIC_API_URL: is required when APP_ENV=prod");
        }
        let pool = settings
            .pool(10)
            .await
            .context("cannot connect to DATABASE_URL")?;
        db::MIGRATOR
            .run(&pool)
            .await
            .context("applying migrations")?;
        let storage = Storage::from_settings(&settings).context("storage")?;
        let redis = redis::Client::open(settings.redis_url()).ok();
        let executor = executor_for(&settings, &pool).await?;
        let resumed = executor.resume().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished imports");
        }
        let listener = TcpListener::bind(&settings.api.bind_addr)
            .await
            .with_context(|| format!("cannot bind BIND_ADDR={}", settings.api.bind_addr))?;
        let metrics_listener = match &settings.limits.metrics_bind_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind METRICS_BIND_ADDR={addr}"))?,
            ),
            None => None,
        };
        let limits = settings.limits.clone();
        let sweeper = sweeper::Sweeper {
            pool: pool.clone(),
            storage: storage.clone(),
            executor: executor.clone(),
        };
        let sweep_every = settings.api.sweep_interval;
        let state = AppState::new(settings, pool, redis, storage, executor.clone());
        let metrics = metrics_listener.map(|l| {
            (
                l,
                routes::health::metrics_router().with_state(state.clone()),
            )
        });
        Ok(Application {
            listener,
            router: app(state),
            executor,
            metrics,
            sweeper: (sweeper, sweep_every),
            state_limits: limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Where `/metrics` is served when `METRICS_BIND_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("bound"))
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests (at most 30 s) and
    /// stops the executor's importers at a batch boundary. HTTP/1.1, where hyper enforces a
    /// header-read timeout: a client must send its request headers within
    /// `REQUEST_TIMEOUT_SECONDS` (slowloris). Connections are capped in total and per client
    /// address and their writes must make progress (`connections`); request bodies are
    /// bounded by `request_limits` (the upload's by `upload_limits`).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let stop_sweeping = tokio_util::sync::CancellationToken::new();
        let (sweeper, every) = self.sweeper;
        tokio::spawn(sweeper.run(every, stop_sweeping.clone()));
        accept_until(
            &self.listener,
            &self.router,
            &self.state_limits,
            &graceful,
            shutdown,
        )
        .await;
        drop(self.listener);
        stop_sweeping.cancel();
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                tracing::warn!("requests still running after 30 s; stopping anyway");
            }
        }
        if let Some(m) = metrics {
            m.abort();
        }
        self.executor.shutdown().await;
        Ok(())
    }
}

/// Accepts connections until `shutdown` resolves: each is admitted by the connection limits
/// (or refused), its writes bounded by `SEND_TIMEOUT_SECONDS`, and served by hyper under
/// `graceful`.
async fn accept_until(
    listener: &TcpListener,
    router: &axum::Router,
    limits: &bulk_import_core::limits::Limits,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        service::TowerToHyperService,
    };
    use tower::Layer;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout);
    let connection_limits = connections::ConnectionLimits::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let admitted = match connection_limits.admit(addr.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                connections::refuse(stream, why);
                continue;
            }
        };
        let service = (
            axum::Extension(axum::extract::ConnectInfo(addr)),
            axum::Extension(connection_limits.clone()),
        )
            .layer(router.clone());
        let io = TokioIo::new(connections::SendDeadline::new(stream, limits.send_timeout));
        let connection = builder.serve_connection(io, TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: draining requests");
}
