//! The I/O that carries a reconcile's [`Plan`](crate::plan::Plan) out: create the Job,
//! mirror it (row, status, stop), cancel, retry, expire a finished ImportJob. Each step can be repeated: a failure anywhere is retried as a whole.

use crate::{
    context::{publish, read_row, record_failure, Context},
    job_template::{importer_job as job_for, job_name},
    plan::{Mirror, Then, MIRROR_EVERY},
    status::{from_row, Observed, Phase},
    status_apply::write_status,
    Error, Result,
};
use bulk_import_core::{crd::ImportJob, JobRow};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::{
    api::{Api, DeleteParams, PostParams, PropagationPolicy},
    runtime::{controller::Action, events::EventType},
    ResourceExt,
};
use std::time::Duration;
use uuid::Uuid;

fn delete_params() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    }
}

pub(crate) async fn delete_job(jobs: &Api<KubeJob>, name: &str) -> Result<()> {
    match jobs.delete(name, &delete_params()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the ImportJob's Kubernetes Job; `None` when it was created meanwhile (our cache
/// lags, or a previous leader): the Job watch brings it into the cache and triggers the
/// next reconcile; nothing to read.
pub(crate) async fn create(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
    jobs: &Api<KubeJob>,
) -> Result<Option<KubeJob>> {
    // Taken first: once its Job exists, the sweep ends the import if the ImportJob goes.
    crate::sweep::take(ctx, id).await?;
    let desired = job_for(ij, id, &ctx.config);
    match jobs.create(&PostParams::default(), &desired).await {
        Ok(created) => {
            let note = format!("created Job {}", job_name(ij));
            publish(ctx, ij, EventType::Normal, "JobCreated", note).await;
            Ok(Some(created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Mirrors a Job: a failure recorded in the row first, then the status, then the Job
/// stopped: if the status write fails, the retry still finds the Job and decides again;
/// once the status is Failed, a leftover Job is deleted.
pub(crate) async fn carry_out(
    ij: &ImportJob,
    ctx: &Context,
    m: Mirror,
    name: &str,
    mut row: Option<JobRow>,
    jobs: &Api<KubeJob>,
) -> Result<Action> {
    if let Some(error) = &m.record_failure {
        record_failure(ctx, Some(m.id), error).await?;
        row = read_row(ctx, m.id).await?;
    }
    let mut acted = ij.clone();
    let mut next = name.to_string();
    if let Some((n, limit)) = &m.grow_memory {
        // OOM-killed: the next Job (`<name>-oom-<n>`) runs with a larger memory limit.
        let status = acted.status.get_or_insert_with(Default::default);
        status.oom_retries = Some(*n);
        status.memory_limit = Some(limit.clone());
        next = job_name(&acted);
        let note = format!("{}; the next Job is {next}", m.observed.message);
        publish(ctx, ij, EventType::Warning, "OOMKilled", note).await;
    }
    write_status(&acted, ctx, &m.observed, Some(&next), row.as_ref()).await?;
    if m.stop_job {
        delete_job(jobs, name).await?;
    }
    Ok(match m.then {
        Then::Finished => just_finished(ctx),
        Then::AwaitChange => Action::await_change(),
        Then::Requeue(after) => Action::requeue(after),
    })
}

/// `spec.cancelRequested`: the row is cancelled first (the importer's next batch commit is
/// refused and it stops), then the status says `Cancelled`, then the Job is stopped
/// (`stop_job`: it is still running; its pod gets SIGTERM and stops at a batch boundary).
/// An import that ended before the cancel keeps its outcome.
pub(crate) async fn cancel(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
    stop_job: bool,
    jobs: &Api<KubeJob>,
) -> Result<Action> {
    if let Some(db) = &ctx.db {
        bulk_import_core::repo::cancel(db, id).await?;
    }
    let row = read_row(ctx, id).await?;
    let observed = row
        .as_ref()
        .and_then(|r| from_row(r.status(), r.error.as_deref()))
        .unwrap_or_else(crate::status::cancelled);
    let name = job_name(ij);
    write_status(ij, ctx, &observed, Some(&name), row.as_ref()).await?;
    if stop_job {
        delete_job(jobs, &name).await?;
    }
    Ok(if observed.phase.is_terminal() {
        just_finished(ctx)
    } else {
        Action::await_change()
    })
}

/// `spec.retries` raised above `status.retries`: a `Failed` import runs again from its
/// checkpoint. The row goes back to `pending` first (the API's retry route has done that
/// already; a `kubectl patch` has not), the failed run's Job is deleted (it would only wait
/// for its TTL), then the status says `Pending`, `Retrying`, with the new count — and the
/// next reconcile creates the Job `<name>-retry-<n>` (the importer resumes from the
/// checkpoint). Every step can be repeated, so a failure anywhere is retried as a whole.
/// A raise while the import is not `Failed` (running, complete, cancelled) is acknowledged
/// in `status.retries` and ignored, with a Warning Event.
pub(crate) async fn retry(
    ij: &ImportJob,
    ctx: &Context,
    id: Option<Uuid>,
    retries: u32,
    jobs: &Api<KubeJob>,
) -> Result<Action> {
    let status = ij.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().and_then(Phase::parse);
    let failed = phase == Some(Phase::Failed);
    // With a database and a valid id, the row decides: failed → pending (a no-op when the
    // API has done it already), then it must be pending.
    let checked = match (&ctx.db, id) {
        (Some(db), Some(id)) => {
            if failed {
                bulk_import_core::repo::retry(db, id).await?;
            }
            true
        }
        _ => false,
    };
    let row = match id {
        Some(id) => read_row(ctx, id).await?,
        None => None,
    };
    let runnable = failed
        && (!checked
            || row
                .as_ref()
                .is_some_and(|r| r.status() == bulk_import_core::JobStatus::Pending));
    let mut acted = ij.clone();
    let new_status = acted.status.get_or_insert_with(Default::default);
    new_status.retries = Some(retries);
    if !runnable {
        return ignore_retry(&acted, ctx, retries, phase, row.as_ref()).await;
    }
    if let Some(old) = status.job_name.as_deref() {
        delete_job(jobs, old).await?;
    }
    // A new run: its own start, no end yet.
    new_status.started_at = None;
    new_status.finished_at = None;
    let observed = Observed::new(
        Phase::Pending,
        "Retrying",
        format!("retry {retries}: the import runs again from its checkpoint"),
    );
    write_status(
        &acted,
        ctx,
        &observed,
        Some(&job_name(&acted)),
        row.as_ref(),
    )
    .await?;
    // The status write triggers no reconcile (own_writes_filtered): come back to create
    // the Job once the cache holds the new status.
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// A retry raised while the import is not `Failed`: acknowledged in `status.retries`
/// (`acted` carries it), the rest of the status kept, a Warning Event.
async fn ignore_retry(
    acted: &ImportJob,
    ctx: &Context,
    retries: u32,
    phase: Option<Phase>,
    row: Option<&JobRow>,
) -> Result<Action> {
    let status = acted.status.clone().unwrap_or_default();
    let shown = phase.unwrap_or(Phase::Pending);
    let observed = Observed::new(
        shown,
        status.reason.as_deref().unwrap_or(shown.as_str()),
        status.message.clone().unwrap_or_default(),
    );
    let now = row.map(|r| r.status().public().to_string());
    publish(
        ctx,
        acted,
        EventType::Warning,
        "RetryIgnored",
        format!(
            "retry {retries} ignored: only a Failed import runs again (the ImportJob is {}, the import {})",
            shown.as_str(),
            now.as_deref().unwrap_or("unknown")
        ),
    )
    .await;
    write_status(acted, ctx, &observed, status.job_name.as_deref(), row).await?;
    Ok(if shown.is_terminal() {
        just_finished(ctx)
    } else {
        Action::requeue(MIRROR_EVERY)
    })
}

/// After the status said the import ended (its own write triggers no reconcile): come back
/// when the ImportJob's TTL is up.
pub(crate) fn just_finished(ctx: &Context) -> Action {
    match ctx.config.importjob_ttl_seconds_after_finished {
        0 => Action::await_change(),
        ttl => Action::requeue(Duration::from_secs(ttl)),
    }
}

/// A finished ImportJob is deleted `IMPORTJOB_TTL_SECONDS_AFTER_FINISHED` after it ended
/// (the sweep then deletes its objects with `OBJECT_RETENTION=delete`, as for any deletion); until then the reconcile comes back then.
pub(crate) async fn expire(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    let ttl = ctx.config.importjob_ttl_seconds_after_finished;
    let finished = ij
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let (true, Some(finished)) = (ttl > 0, finished) else {
        return Ok(Action::await_change());
    };
    let due = finished + chrono::Duration::seconds(ttl as i64);
    let left = due.signed_duration_since(chrono::Utc::now());
    if left > chrono::Duration::zero() {
        return Ok(Action::requeue(left.to_std().unwrap_or(MIRROR_EVERY)));
    }
    let api: Api<ImportJob> = Api::namespaced(
        ctx.client.clone(),
        &ij.namespace().ok_or(Error::MissingNamespace)?,
    );
    match api.delete(&ij.name_any(), &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(importjob = %ij.name_any(), "finished for longer than its TTL: deleted")
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
