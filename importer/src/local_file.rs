//! A job from a local file (`bulk-import-importer submit`): uploads the file to storage and
//! creates a pending job for it, without the API — for operators, scripts and the
//! benchmark. (Not the API's "submit", which hands a pending job to the executor.)

use bulk_import_core::{
    accounts,
    hashing::HashingReader,
    job::{fingerprint, upload_key},
    options::ImportOptions,
    repo::{self, NewJob},
    ImportMode, Settings, Storage,
};
use sqlx::PgPool;
use std::path::Path;
use uuid::Uuid;

/// Owner of jobs submitted from the command line when none is named. The account has no
/// usable password (its hash is `!`), so nobody can log in as it; a new one gets an
/// organization of its own (`accounts::service_account`), and the job goes to the owner's
/// organization.
pub const DEFAULT_OWNER: &str = "cli@bulk-import.invalid";

pub async fn create_job(
    settings: &Settings,
    pool: &PgPool,
    file: &Path,
    mode: ImportMode,
    owner: &str,
) -> anyhow::Result<Uuid> {
    create_job_with(settings, pool, file, mode, owner, &ImportOptions::default()).await
}

/// `create_job` with options (dry run, error limit, dialect overrides).
pub async fn create_job_with(
    settings: &Settings,
    pool: &PgPool,
    file: &Path,
    mode: ImportMode,
    owner: &str,
    options: &ImportOptions,
) -> anyhow::Result<Uuid> {
    let storage = Storage::from_settings(settings)?;
    let owner =
        bulk_import_core::Email::parse(owner).map_err(|e| anyhow::anyhow!("--owner: {e}"))?;
    let (user_id, org_id) = accounts::service_account(pool, owner.as_str()).await?;
    let job_id = Uuid::new_v4();
    let key = upload_key(user_id, job_id);
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let mut reader = HashingReader::new(f, u64::MAX);
    let size = storage.put_stream(&key, &mut reader).await?;
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    repo::create_pending(
        pool,
        &NewJob {
            id: job_id,
            org_id,
            user_id,
            idempotency_key: &format!("cli-{job_id}"),
            fingerprint: &fingerprint(&reader.hex_digest(), mode, options),
            mode,
            source_object: &key,
            file_name: &file_name,
            file_size: size as i64,
            options,
        },
    )
    .await?;
    Ok(job_id)
}
