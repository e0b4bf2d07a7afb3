//! `bulk-import-api` serves the REST API; `bulk-import-api migrate` only applies migrations.

use anyhow::Context;
use bulk_import_api::{shutdown_signal, Application};
use bulk_import_core::{db, telemetry, Settings};

#[tokio::main]
async fn main() {
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
