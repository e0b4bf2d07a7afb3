//! The ImportJob controller: validate → build the Job (once) → observe the Job and its pods
//! (from the controller's caches: no API read per reconcile) → write the status (server-side
//! apply, field manager `bulk-import-operator`, the only writer of ImportJob status), the
//! Postgres row when the importer could not, and Events on transitions. A finalizer cleans up.
//!
//! Progress: the importer has no Kubernetes credentials. While an import runs, the operator
//! reads its row from Postgres once a second and applies the counters when they changed, so a
//! steady import costs at most one API request a second. The operator's own status writes do
//! not trigger reconciles (the ImportJob watch is filtered on generation, deletion and
//! finalizers).
//!
//! Durable decisions: a failure is recorded in Postgres and in the status before the Job is
//! stopped, so a failed write is retried with the Job still there. A Job that is gone while
//! the row has ended (its TTL passed while the operator was down, `kubectl delete job`) is
//! never created again: the status takes the row's outcome.

use crate::{
    config::{OperatorConfig, Retention},
    job_template::{importer_job as job_for, job_name, keys_of_the_job, validate, INSTANCE_LABEL},
    metrics::Metrics,
    plan::{mirror, plan, Mirror, Plan, Seen, Then, MIRROR_EVERY},
    status::{conditions, from_row, job_finished, Observed, Phase},
    Error, Result,
};
use bulk_import_core::job::JobError;
use bulk_import_core::{
    crd::{resource_name, ImportJob, ImportJobStatus, JOB_ID_LABEL, OPERATOR_MANAGER},
    retry::Policy,
    JobRow, Storage,
};
use futures_util::StreamExt;
use k8s_openapi::api::{
    batch::v1::Job as KubeJob,
    core::v1::{Event as CoreEvent, Pod},
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{finalizer, Event as Finalizer},
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Client, Resource, ResourceExt,
};
use serde_json::json;
use sqlx::PgPool;
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};
use uuid::Uuid;

pub const FINALIZER: &str = "bulkimport.dev/cleanup";
const MANAGED: &str = "app.kubernetes.io/managed-by=bulk-import-operator";
/// How long a reconcile waits for the Job and pod caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The controller's caches of the Jobs and pods it manages (kept by watches; reconciles read
/// them instead of the API).
#[derive(Clone)]
pub struct Caches {
    pub jobs: Store<KubeJob>,
    pub pods: Store<Pod>,
}

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    /// Where job-level failures the importer could not record are written, and progress is
    /// read from.
    pub db: Option<PgPool>,
    /// For the finalizer's `OBJECT_RETENTION=delete`.
    pub storage: Option<Storage>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub caches: Caches,
    /// Consecutive failures per ImportJob, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        db: Option<PgPool>,
        storage: Option<Storage>,
        metrics: Metrics,
        caches: Caches,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: OPERATOR_MANAGER.into(),
                instance: Some(config.pod_name.clone()),
            },
        );
        Context {
            client,
            config,
            db,
            storage,
            recorder,
            metrics,
            caches,
            failures: Mutex::default(),
        }
    }
}

pub async fn reconcile(ij: Arc<ImportJob>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let key = format!("{ns}/{}", ij.name_any());
    let api: Api<ImportJob> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, ij, |event| async {
        match event {
            Finalizer::Apply(ij) => apply(&ij, &ctx).await,
            Finalizer::Cleanup(ij) => cleanup(&ij, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.failures.lock().expect("lock").remove(&key);
    Ok(action)
}

/// A failing ImportJob is reconciled again after 2 s, doubling to 5 minutes, for as long as
/// it fails.
const RECONCILE_BACKOFF: Policy = Policy {
    first_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(300),
    retries: usize::MAX,
};

/// Transient errors (API server, database): exponential backoff per ImportJob
/// ([`RECONCILE_BACKOFF`]). Invalid specs never get here: they wait for a change.
pub fn error_policy(ij: Arc<ImportJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.inc();
    let key = format!("{}/{}", ij.namespace().unwrap_or_default(), ij.name_any());
    let mut failures = ctx.failures.lock().expect("lock");
    let n = failures.entry(key).or_insert(0);
    *n += 1;
    let delay = RECONCILE_BACKOFF.delay(*n);
    tracing::warn!(importjob = %ij.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn delete_params() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    }
}

async fn delete_job(jobs: &Api<KubeJob>, name: &str) -> Result<()> {
    match jobs.delete(name, &delete_params()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The import's row, when the operator has a database.
async fn read_row(ctx: &Context, id: Uuid) -> Result<Option<JobRow>> {
    match &ctx.db {
        Some(db) => Ok(bulk_import_core::repo::get(db, id).await?),
        None => Ok(None),
    }
}

/// The Job of this ImportJob in the cache (a Job of the same name owned by an earlier
/// ImportJob is not it).
fn cached_job(ctx: &Context, ij: &ImportJob, ns: &str) -> Option<Arc<KubeJob>> {
    let job = ctx
        .caches
        .jobs
        .get(&ObjectRef::new(&job_name(ij)).within(ns))?;
    let uid = ij.metadata.uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid)
        .then_some(job)
}

/// The pods of this run's Job: the import's pods, but not those of an earlier run's Job
/// (after a retry; the Job controller labels its pods `batch.kubernetes.io/job-name`).
fn cached_pods(ctx: &Context, ns: &str, job_id: &str, job: &str) -> Vec<Pod> {
    ctx.caches
        .pods
        .state_filter(|p| {
            let labels = p.labels();
            p.namespace().as_deref() == Some(ns)
                && labels.get(JOB_ID_LABEL).map(String::as_str) == Some(job_id)
                && ["batch.kubernetes.io/job-name", "job-name"]
                    .iter()
                    .filter_map(|l| labels.get(*l))
                    .all(|j| j == job)
        })
        .into_iter()
        .map(|p| (*p).clone())
        .collect()
}

async fn caches_ready(ctx: &Context) -> Result<()> {
    let ready = async {
        let _ = ctx.caches.jobs.wait_until_ready().await;
        let _ = ctx.caches.pods.wait_until_ready().await;
    };
    tokio::time::timeout(CACHE_SYNC_TIMEOUT, ready)
        .await
        .map_err(|_| Error::CacheNotReady)
}

/// The Job controller's latest `FailedCreate` Event about this Job (pod creation rejected by
/// a ResourceQuota, a LimitRange or an admission webhook), if any.
async fn failed_create_message(ctx: &Context, ns: &str, job: &str) -> Result<Option<String>> {
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), ns);
    let list = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"
        )))
        .await?;
    Ok(list
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp.as_ref().map(|t| t.0).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        })
        .and_then(|e| e.message))
}

/// Reads what the reconcile needs (the caches, then the row), decides ([`plan`]), and
/// carries the plan out.
async fn apply(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let jobs: Api<KubeJob> = Api::namespaced(ctx.client.clone(), &ns);
    // The spec's job id, parsed and checked once for the whole reconcile.
    let id = validate(ij);
    caches_ready(ctx).await?;
    let cached = cached_job(ctx, ij, &ns);
    let name = job_name(ij);
    let pods = cached_pods(ctx, &ns, &ij.spec.job_id, &name);
    // Read after the caches: the row is at least as new as what they show.
    let row = match &id {
        Ok(id) => read_row(ctx, *id).await?,
        Err(_) => None,
    };
    match plan(ij, &id, cached.as_deref(), &pods, row.as_ref()) {
        Plan::Retry(retries) => retry(ij, ctx, id.ok(), retries, &jobs).await,
        Plan::Finished { stop_job } => {
            if stop_job {
                delete_job(&jobs, &name).await?;
            }
            expire(ij, ctx).await
        }
        Plan::Invalid(why) => {
            let observed = Observed::new(Phase::Invalid, "InvalidSpec", why);
            write_status(ij, ctx, &observed, None, None).await?;
            Ok(Action::await_change())
        }
        Plan::Cancel(id) => {
            cancel(
                ij,
                ctx,
                id,
                cached.is_some_and(|j| !job_finished(&j)),
                &jobs,
            )
            .await
        }
        Plan::ShowEnded(ended) => {
            write_status(ij, ctx, &ended, Some(&name), row.as_ref()).await?;
            Ok(just_finished(ctx))
        }
        Plan::Create(id) => {
            let Some(created) = create(ij, ctx, id, &jobs).await? else {
                return Ok(Action::requeue(MIRROR_EVERY));
            };
            let m = mirror(ij, id, &created, &pods, row.as_ref(), Seen::Created);
            carry_out(ij, ctx, m, &name, row, &jobs).await
        }
        Plan::Mirror(mut m) => {
            if m.look_for_failed_create {
                if let Some(message) = failed_create_message(ctx, &ns, &name).await? {
                    let job = cached.as_deref().expect("mirroring a cached Job");
                    let seen = Seen::FailedCreate(&message);
                    m = mirror(ij, m.id, job, &pods, row.as_ref(), seen);
                }
            }
            carry_out(ij, ctx, m, &name, row, &jobs).await
        }
    }
}

/// Creates the ImportJob's Kubernetes Job; `None` when it was created meanwhile (our cache
/// lags, or a previous leader): the Job watch brings it into the cache and triggers the
/// next reconcile; nothing to read.
async fn create(
    ij: &ImportJob,
    ctx: &Context,
    id: Uuid,
    jobs: &Api<KubeJob>,
) -> Result<Option<KubeJob>> {
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
async fn carry_out(
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
    write_status(ij, ctx, &m.observed, Some(name), row.as_ref()).await?;
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
async fn cancel(
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
async fn retry(
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
fn just_finished(ctx: &Context) -> Action {
    match ctx.config.importjob_ttl_seconds_after_finished {
        0 => Action::await_change(),
        ttl => Action::requeue(Duration::from_secs(ttl)),
    }
}

/// A finished ImportJob is deleted `IMPORTJOB_TTL_SECONDS_AFTER_FINISHED` after it ended
/// (its finalizer cleans up as for any deletion); until then the reconcile comes back then.
async fn expire(ij: &ImportJob, ctx: &Context) -> Result<Action> {
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

/// The status the operator applies: its observation, and the row's counters and progress.
pub fn desired_status(
    ij: &ImportJob,
    observed: &Observed,
    job_name: Option<&str>,
    row: Option<&JobRow>,
    now: &str,
) -> ImportJobStatus {
    let status = ij.status.clone().unwrap_or_default();
    let previous_conditions = status.conditions.clone().unwrap_or_default();
    let conds = conditions(observed, &previous_conditions, ij.meta().generation, now);
    let started = status.started_at.clone().or_else(|| {
        (observed.phase == Phase::Running || observed.phase.is_terminal()).then(|| now.into())
    });
    let finished = observed
        .phase
        .is_terminal()
        .then(|| status.finished_at.clone().unwrap_or_else(|| now.into()));
    let counters = |f: fn(&JobRow) -> i64, old: Option<i64>| row.map(f).or(old);
    let seconds = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let duration = match (started.as_deref(), finished.as_deref()) {
        (Some(s), Some(f)) => seconds(s)
            .zip(seconds(f))
            .map(|(s, f)| bulk_import_core::crd::format_duration((f - s).num_seconds())),
        _ => None,
    };
    ImportJobStatus {
        phase: Some(observed.phase.as_str().into()),
        reason: Some(observed.reason.clone()),
        message: Some(observed.message.clone()),
        job_name: job_name.map(Into::into),
        observed_generation: ij.meta().generation,
        retries: status.retries,
        started_at: started,
        finished_at: finished,
        duration,
        processed_rows: counters(|r| r.processed_rows, status.processed_rows),
        inserted_rows: counters(|r| r.inserted_rows, status.inserted_rows),
        updated_rows: counters(|r| r.updated_rows, status.updated_rows),
        error_rows: counters(|r| r.error_rows, status.error_rows),
        progress_percent: row
            .map(JobRow::progress_percent)
            .or(status.progress_percent),
        conditions: Some(conds),
    }
}

/// Server-side apply of the status, only when it changes; an Event on every phase
/// transition.
async fn write_status(
    ij: &ImportJob,
    ctx: &Context,
    observed: &Observed,
    job_name: Option<&str>,
    row: Option<&JobRow>,
) -> Result<()> {
    let status = ij.status.clone().unwrap_or_default();
    let now = now();
    let desired = desired_status(ij, observed, job_name, row, &now);
    // Timestamps that would only move because time passed are not a change.
    let unchanged = ImportJobStatus {
        started_at: status.started_at.clone(),
        finished_at: status.finished_at.clone(),
        ..desired.clone()
    } == status
        && desired.started_at.is_some() == status.started_at.is_some()
        && desired.finished_at.is_some() == status.finished_at.is_some();
    if unchanged {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "bulkimport.dev/v1alpha1",
        "kind": "ImportJob",
        "status": desired,
    });
    let api: Api<ImportJob> = Api::namespaced(
        ctx.client.clone(),
        &ij.namespace().ok_or(Error::MissingNamespace)?,
    );
    api.patch_status(
        &ij.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if status.phase.as_deref() != Some(observed.phase.as_str()) {
        if observed.phase.is_terminal() {
            ctx.metrics
                .imports_finished
                .with_label_values(&[observed.phase.as_str(), observed.reason.as_str()])
                .inc();
        }
        let kind = if matches!(observed.phase, Phase::Failed | Phase::Invalid) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            ij,
            kind,
            observed.phase.as_str(),
            format!("{}: {}", observed.reason, observed.message),
        )
        .await;
        tracing::info!(importjob = %ij.name_any(), phase = observed.phase.as_str(), reason = %observed.reason, "phase changed");
    }
    Ok(())
}

async fn publish(ctx: &Context, ij: &ImportJob, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ij.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Marks the Postgres row failed unless it already ended (the importer's own record wins).
/// The messages are the operator's own words about the pod (OOMKilled, image pull,
/// deadline), never driver text.
async fn record_failure(ctx: &Context, id: Option<Uuid>, error: &JobError) -> Result<()> {
    let (Some(db), Some(id)) = (&ctx.db, id) else {
        return Ok(());
    };
    bulk_import_core::repo::fail(db, id, error).await?;
    Ok(())
}

/// Deleting an ImportJob: its Job goes (and its pods, by background propagation), an
/// unfinished import is marked failed, and the objects go too with `OBJECT_RETENTION=delete`
/// — only objects under the job's own prefixes (checked again here, whatever the CRD's
/// validation let through).
async fn cleanup(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let jobs: Api<KubeJob> = Api::namespaced(ctx.client.clone(), &ns);
    delete_job(&jobs, &job_name(ij)).await?;
    let error = JobError::new(
        "importjob_deleted",
        "the ImportJob was deleted before the import finished",
    );
    record_failure(ctx, ij.spec.job_id.parse().ok(), &error).await?;
    if ctx.config.retention == Retention::Delete {
        // Keys that are not this job's name no object of this import (the spec never ran):
        // nothing is deleted, and the ImportJob is not kept from being deleted either.
        if let (Some(storage), Ok(id)) = (&ctx.storage, keys_of_the_job(ij)) {
            // The report's sibling: the re-importable file of bad rows.
            let rows = bulk_import_core::job::rows_report_key(id);
            for key in [&ij.spec.source.key, &ij.spec.report.key, &rows] {
                storage
                    .delete(key)
                    .await
                    .map_err(|e| Error::Storage(e.to_string()))?;
            }
        }
    }
    tracing::info!(importjob = %ij.name_any(), "cleaned up");
    Ok(Action::await_change())
}

/// What triggers a reconcile of an ImportJob: its spec (generation), its deletion and its
/// finalizers — not its status, which only this operator writes.
pub fn own_writes_filtered(ij: &ImportJob) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        ij.meta().generation,
        ij.meta().deletion_timestamp.is_some(),
        ij.finalizers(),
    )
        .hash(&mut h);
    Some(h.finish())
}

/// The label selector of this instance's objects (`managed` plus the instance, if any).
fn selector(base: Option<&str>, instance: Option<&str>) -> Option<String> {
    let instance = instance.map(|i| format!("{INSTANCE_LABEL}={i}"));
    match (base, instance) {
        (Some(b), Some(i)) => Some(format!("{b},{i}")),
        (Some(b), None) => Some(b.into()),
        (None, i) => i,
    }
}

/// Runs the controller until `shutdown` resolves. One piece: the watches, their caches and
/// the controller are one builder chain, read top to bottom. `store` receives the controller's cache of
/// ImportJobs, from which `/metrics` counts them by phase without API calls.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    db: Option<PgPool>,
    storage: Option<Storage>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    store: Arc<std::sync::OnceLock<Store<ImportJob>>>,
) {
    let ns = config.namespace.clone();
    let instance = config.instance.clone();
    let config_of = |base: Option<&str>| match selector(base, instance.as_deref()) {
        Some(s) => watcher::Config::default().labels(&s),
        None => watcher::Config::default(),
    };
    let importjobs: Api<ImportJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<KubeJob> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let (ij_reader, ij_writer) = reflector::store();
    let watch_metrics = metrics.clone();
    let ij_stream = watcher(importjobs, config_of(None))
        .default_backoff()
        .inspect(move |item| watch_metrics.note_watch(item.is_ok()))
        .reflect(ij_writer)
        .applied_objects()
        .predicate_filter(own_writes_filtered, Default::default());
    let (job_reader, job_writer) = reflector::store();
    let job_stream = watcher(jobs, config_of(Some(MANAGED)))
        .default_backoff()
        .reflect(job_writer)
        .touched_objects();
    let (pod_reader, pod_writer) = reflector::store();
    let pod_stream = watcher(pods, config_of(Some(MANAGED)))
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let _ = store.set(ij_reader.clone());
    let ctx = Arc::new(Context::new(
        client,
        config,
        db,
        storage,
        metrics,
        Caches {
            jobs: job_reader,
            pods: pod_reader,
        },
    ));
    let pod_ns = ns.clone();
    Controller::for_stream(ij_stream, ij_reader)
        .owns_stream(job_stream)
        .watches_stream(pod_stream, move |pod: Pod| {
            let id = pod
                .labels()
                .get(JOB_ID_LABEL)
                .and_then(|id| id.parse().ok());
            id.map(|id| ObjectRef::<ImportJob>::new(&resource_name(id)).within(&pod_ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
