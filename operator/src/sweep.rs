//! Teardown without a finalizer. ImportJobs carry none, so deleting one, its namespace or the
//! release never waits for the operator or Postgres: the Job goes by garbage collection (its
//! owner reference), its pod with it (SIGTERM: the importer stops at a batch boundary). What
//! Kubernetes cannot do (end the import's row, delete its objects with
//! `OBJECT_RETENTION=delete`) the operator's sweep does: every [`SWEEP_EVERY`] it compares
//! the imports it has taken (`kube_import_jobs`, written before it creates a Job) with the
//! ImportJobs in its cache, and for each one gone fails an unfinished import
//! (`importjob_deleted`), deletes its objects if so configured, and forgets it. An operator
//! that was stopped while ImportJobs were deleted does it at its next start.
//!
//! ImportJobs from before (with the finalizer `bulkimport.dev/cleanup`) lose it at their next
//! reconcile ([`release_legacy_finalizer`]).

use crate::{config::Retention, context::Context, Error, Result};
use bulk_import_core::{
    crd::{job_id_of, ImportJob},
    job::{is_upload_key_of, report_key, rows_report_key, JobError},
    repo,
};
use kube::{
    api::{Api, Patch, PatchParams},
    runtime::{controller::Action, reflector::Store},
    ResourceExt,
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use uuid::Uuid;

/// How often the operator looks for imports whose ImportJob is gone.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The finalizer ImportJobs had before: removed, never added.
pub const LEGACY_FINALIZER: &str = "bulkimport.dev/cleanup";

/// Records that this operator runs the import `id` (before it creates its Job), so that its
/// sweep ends the import when the ImportJob is gone.
pub(crate) async fn take(ctx: &Context, id: Uuid) -> Result<()> {
    if let Some(db) = &ctx.db {
        let instance = ctx.config.instance.as_deref().unwrap_or("");
        repo::take(db, id, &ctx.config.namespace, instance).await?;
    }
    Ok(())
}

/// Ends the imports this operator has taken whose ImportJob is gone (`exists` says whether
/// it is there); returns how many.
pub async fn sweep(ctx: &Context, exists: impl Fn(Uuid) -> bool) -> Result<usize> {
    let Some(db) = &ctx.db else { return Ok(0) };
    let instance = ctx.config.instance.as_deref().unwrap_or("");
    let mut ended = 0;
    for taken in repo::taken(db, &ctx.config.namespace, instance).await? {
        if exists(taken.id) {
            continue;
        }
        let error = JobError::new(
            "importjob_deleted",
            "the ImportJob was deleted before the import finished",
        );
        repo::fail(db, taken.id, &error).await?;
        if ctx.config.retention == Retention::Delete {
            delete_objects(ctx, taken.id, &taken.source_object).await?;
        }
        repo::forget(db, taken.id).await?;
        tracing::info!(job_id = %taken.id, "its ImportJob is gone: the import is ended and forgotten");
        ended += 1;
    }
    Ok(ended)
}

/// The import's own objects: its upload (only under the key the API gives it) and reports.
async fn delete_objects(ctx: &Context, id: Uuid, source: &str) -> Result<()> {
    let Some(storage) = &ctx.storage else {
        return Ok(());
    };
    let mut keys = vec![report_key(id), rows_report_key(id)];
    if is_upload_key_of(id, source) {
        keys.push(source.to_string());
    }
    for key in keys {
        storage
            .delete(&key)
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
    }
    Ok(())
}

/// Sweeps every [`SWEEP_EVERY`] once the ImportJob cache has its first list (`listed` turns
/// true at the watch's first `InitDone`), until dropped.
pub async fn run(ctx: Arc<Context>, store: Store<ImportJob>, mut listed: watch::Receiver<bool>) {
    if listed.wait_for(|l| *l).await.is_err() {
        return;
    }
    let ns = ctx.config.namespace.clone();
    loop {
        // The cache's ids, taken once the taken imports are read (at the first look-up): an
        // import is taken only once its ImportJob is in the cache, so one taken meanwhile is
        // found. By id, not by name: a hand-written ImportJob has a name of its own and its
        // uid for an id.
        let ids = std::sync::OnceLock::new();
        let exists = |id: Uuid| {
            ids.get_or_init(|| {
                store
                    .state()
                    .iter()
                    .filter(|ij| ij.namespace().as_deref() == Some(ns.as_str()))
                    .filter_map(|ij| job_id_of(ij).parse().ok())
                    .collect::<std::collections::HashSet<Uuid>>()
            })
            .contains(&id)
        };
        if let Err(e) = sweep(&ctx, exists).await {
            tracing::warn!(error = %e, "the sweep of deleted ImportJobs failed; next in {SWEEP_EVERY:?}");
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// An ImportJob with the finalizer of before: its import is taken (for the sweep), then the
/// finalizer removed (a merge patch on the list without it, guarded by the resourceVersion);
/// the change triggers the next reconcile.
pub(crate) async fn release_legacy_finalizer(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    if let Ok(id) = ij.spec.job_id.parse() {
        take(ctx, id).await?;
    }
    let rest: Vec<&String> = ij
        .finalizers()
        .iter()
        .filter(|f| *f != LEGACY_FINALIZER)
        .collect();
    let api: Api<ImportJob> = Api::namespaced(
        ctx.client.clone(),
        &ij.namespace().ok_or(Error::MissingNamespace)?,
    );
    let patch = json!({
        "metadata": {"finalizers": rest, "resourceVersion": ij.resource_version()},
    });
    match api
        .patch(
            &ij.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
