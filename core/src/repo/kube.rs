//! The imports an operator has taken from an ImportJob (`kube_import_jobs`), for its sweep
//! of ImportJobs that are gone: ImportJobs have no finalizer, so a deleted one (its namespace
//! deleted, the operator stopped first) leaves its import here until an operator of the same
//! namespace and release ends it.

use super::Result;
use sqlx::PgExecutor;
use uuid::Uuid;

/// An import an operator has taken, as its sweep needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub id: Uuid,
    pub source_object: String,
}

/// Records that the operator of `namespace` and `instance` ('' without one) runs `id`.
pub async fn take(
    db: impl PgExecutor<'_>,
    id: Uuid,
    namespace: &str,
    instance: &str,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO kube_import_jobs (job_id, namespace, instance) VALUES ($1, $2, $3) \
         ON CONFLICT (job_id) DO NOTHING",
        id,
        namespace,
        instance
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The imports taken by the operator of `namespace` and `instance`, oldest first.
pub async fn taken(db: impl PgExecutor<'_>, namespace: &str, instance: &str) -> Result<Vec<Taken>> {
    let rows = sqlx::query!(
        "SELECT k.job_id, j.source_object FROM kube_import_jobs k \
         JOIN import_jobs j ON j.id = k.job_id \
         WHERE k.namespace = $1 AND k.instance = $2 ORDER BY k.created_at",
        namespace,
        instance
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Taken {
            id: r.job_id,
            source_object: r.source_object,
        })
        .collect())
}

/// Forgets an import whose ImportJob is gone and whose end was recorded.
pub async fn forget(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    sqlx::query!("DELETE FROM kube_import_jobs WHERE job_id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}
