//! `bulk-import-api` serves the REST API; `bulk-import-api migrate` only applies migrations.

use anyhow::Context;
use bulk_import_api::{shutdown_signal, Application};
use bulk_import_core::{
    db,
    settings::{env_help, Component},
    telemetry, Settings,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bulk-import-api",
    version,
    about = "The bulk-import REST API (and, with EXECUTOR=local, the importers it runs)",
    after_help = env_help(Component::Api)
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default): applies migrations, resumes unfinished imports.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

/// glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, after
/// which argon2's 19 MiB blocks come from the heap arenas and stay there after a burst of
/// logins. A fixed threshold keeps every block of 1 MiB or more mapped, so it goes back to
/// the system when freed (docs/reliability.md, Abuse: hashing memory is not kept).
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    return_large_blocks_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    let cli = Cli::parse();
    telemetry::init("info,sqlx=warn,tower_http=info");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Some(Command::Migrate) => migrate(&settings).await,
        None | Some(Command::Serve) => serve(settings).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings
        .pool(2)
        .await
        .context("cannot connect to DATABASE_URL")?;
    db::MIGRATOR.run(&pool).await.context("migrations failed")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!("bulk-import API listening on http://{}", app.local_addr());
    app.run_until(shutdown_signal()).await
}
