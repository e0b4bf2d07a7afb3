//! `bulk-import-api` serves the REST API; `bulk-import-api migrate` only applies migrations.

use anyhow::Context;
use bulk_import_api::{shutdown_signal, Application};
use bulk_import_core::{db, telemetry, Settings};

/// glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, after
/// which argon2's 19 MiB blocks come from the heap arenas and stay there after a burst of
/// logins. A fixed threshold keeps every block of 1 MiB or more mapped, so it goes back to
/// the system when freed (DESIGN.md §8: hashing memory is not kept).
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
    telemetry::init("info,sqlx=warn,tower_http=info");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match std::env::args().nth(1).as_deref() {
        Some("migrate") => migrate(&settings).await,
        None | Some("serve") => serve(settings).await,
        Some(other) => Err(anyhow::anyhow!(
            "unknown command {other:?}; usage: bulk-import-api [serve|migrate]"
        )),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect(settings.database_url(), 2)
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
