//! bulk-import-api. For now only the `migrate` subcommand, which applies the schema; the
//! HTTP service comes with the API issue.

use anyhow::Context;
use bulk_import_core::{db, telemetry, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("info");
    let settings = Settings::from_env()?;
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => {
            let pool = db::connect(settings.database_url(), 2)
                .await
                .context("cannot connect to DATABASE_URL")?;
            db::MIGRATOR.run(&pool).await.context("migrations failed")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        _ => anyhow::bail!("usage: bulk-import-api migrate"),
    }
}
