//! Everything a run needs, fixed at its start ([`Ctx`]): the settings, the pool and the
//! options of the claim's own connection, storage, this run's owner id, and the bound of one
//! database operation.

use crate::outcome::RunError;
use bulk_import_core::{
    db,
    retry::{retry, Policy},
    Settings, Storage,
};
use sqlx::{postgres::PgConnectOptions, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// Everything a run needs, fixed at its start.
pub(crate) struct Ctx<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) pool: PgPool,
    pub(crate) options: PgConnectOptions,
    pub(crate) storage: Storage,
    pub(crate) owner: Uuid,
    /// Client-side bound of one database operation (a batch, a statement).
    pub(crate) op_timeout: Duration,
}

/// The run's connections and storage client.
pub(crate) async fn context(settings: &Settings) -> Result<Ctx<'_>, RunError> {
    let options = db::connect_options(
        settings.database_url(),
        "bulk-import-importer",
        settings.db_statement_timeout,
    )
    .map_err(|e| RunError::Config {
        what: "DATABASE_URL",
        source: e.into(),
    })?;
    let storage = Storage::from_settings(settings).map_err(|e| RunError::Config {
        what: "storage",
        source: e.into(),
    })?;
    // `IMPORTER_DB_POOL` (default three: the two report uploads at once, `write_report`,
    // leave one for the heartbeat). The loader's two connections and the claim's lock
    // connection are its own.
    let pool = retry(
        "connecting to Postgres",
        Policy::MINUTE,
        db::is_transient,
        || db::pool_options(settings.import.db_pool).connect_with(options.clone()),
    )
    .await?;
    Ok(Ctx {
        settings,
        pool,
        options,
        storage,
        owner: Uuid::new_v4(),
        op_timeout: settings.db_statement_timeout + Duration::from_secs(10),
    })
}
