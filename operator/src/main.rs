//! `bulk-import-operator` runs the controller (with leader election and /health, /ready,
//! /metrics); `bulk-import-operator crd` prints the ImportJob CRD.

use anyhow::Context as _;
use bulk_import_core::{
    crd::crd_yaml,
    telemetry,
    vars::{env_help, Component},
    Settings, Storage,
};
use bulk_import_operator::{
    config::OperatorConfig,
    controller, crd_check,
    leader::LeaderElector,
    metrics::{self, Health, Metrics},
};
use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(
    name = "bulk-import-operator",
    version,
    about = "Runs ImportJobs as Kubernetes Jobs and keeps their status true",
    after_help = env_help(Component::Operator)
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the controller (the default), with leader election and /health, /ready, /metrics.
    Run,
    /// Print the ImportJob CustomResourceDefinition (YAML) and exit.
    Crd,
}

#[tokio::main]
async fn main() {
    use clap::Parser;
    if let Some(Command::Crd) = Cli::parse().command {
        print!("{}", crd_yaml());
        return;
    }
    telemetry::init("info,kube=warn,sqlx=warn");
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The process's life in order: settings, probes, leadership, the controller while the
/// Lease holds, then the Lease released. One piece: each step hands the next the tokens
/// (`stop`, `lost`) that end it, which reads best in one place.
async fn run() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Settings::from_env_without_jwt()?;
    let config = OperatorConfig::from_env(&settings)?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let pool = settings
        .pool(4)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let storage = Storage::from_settings(&settings)?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(&config.bind_addr)
        .await
        .with_context(|| format!("cannot bind OPERATOR_BIND_ADDR={}", config.bind_addr))?;
    tracing::info!(
        "operator probes and metrics on http://{}",
        listener.local_addr()?
    );
    let importjobs = Arc::new(std::sync::OnceLock::new());
    let router = metrics::router(Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        importjobs: importjobs.clone(),
    });
    let http_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
    });
    crd_check::check(&client, &config.namespace, &config.pod_name).await;
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_stop.cancel();
    });

    let elector = LeaderElector::new(
        client.clone(),
        &config.namespace,
        &config.lease_name,
        &config.pod_name,
    );
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(identity = elector.identity(), "waiting for leadership");
    let Some(acquired_at) = elector.acquire(&stop).await else {
        return Ok(());
    };
    tracing::info!("leading: reconciling ImportJobs");
    metrics.leader.set(1);
    // Renew the Lease; stop reconciling if it cannot be renewed in time.
    let lost = CancellationToken::new();
    let renewer = elector.keep_renewing(acquired_at, stop.clone(), lost.clone());

    let controller_stop = stop.clone();
    let controller_lost = lost.clone();
    let running = controller::run(
        client,
        config,
        Some(pool),
        Some(storage),
        metrics,
        async move {
            tokio::select! {
                _ = controller_stop.cancelled() => {}
                _ = controller_lost.cancelled() => {}
            }
        },
        importjobs,
    );
    let abandon = lost.clone();
    tokio::select! {
        _ = running => {}
        // Without the Lease nothing may be written any more: reconciles still waiting on the
        // API (kube's retries) after a short grace are dropped, not awaited.
        _ = async move {
            abandon.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => tracing::error!("reconciles still running after the Lease was lost were dropped"),
    }
    stop.cancel();
    if let Ok(elector) = renewer.await {
        if !lost.is_cancelled() {
            let _ = elector.release().await;
        }
    }
    if lost.is_cancelled() {
        anyhow::bail!("leadership lost; exiting so that the replica restarts as a candidate");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
