//! The ImportJob controller: validate → build the Job (once) → observe the Job and its pods →
//! write the status (server-side apply, field manager `bulk-import-operator`), the Postgres
//! row when the importer could not, and Events on transitions. A finalizer cleans up.

use crate::{
    config::{OperatorConfig, Retention},
    job_template::{build_job, is_object_key, InvalidSpec},
    metrics::Metrics,
    status::{conditions, observe, Observed, Phase},
    Error, Result,
};
use bulk_import_core::{
    crd::{resource_name, ImportJob, JOB_ID_LABEL, OPERATOR_MANAGER},
    Storage,
};
use futures_util::StreamExt;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{finalizer, Event as Finalizer},
        reflector::ObjectRef,
        watcher,
    },
    Client, Resource, ResourceExt,
};
use serde_json::json;
use sqlx::PgPool;
use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

pub const FINALIZER: &str = "bulkimport.dev/cleanup";
const MANAGED: &str = "app.kubernetes.io/managed-by=bulk-import-operator";

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    /// Where job-level failures the importer could not record are written.
    pub db: Option<PgPool>,
    /// For the finalizer's `OBJECT_RETENTION=delete`.
    pub storage: Option<Storage>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per ImportJob, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// ImportJobs (by uid) whose Job this process deleted because its pod could not start.
    /// A reconcile from a cache that predates the Failed status must not create it again.
    stopped: Mutex<std::collections::HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        db: Option<PgPool>,
        storage: Option<Storage>,
        metrics: Metrics,
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
            failures: Mutex::default(),
            stopped: Mutex::default(),
        }
    }
}

pub async fn reconcile(ij: Arc<ImportJob>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
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

/// Transient errors (API server, database): exponential backoff per ImportJob, 2 s doubling
/// to 5 minutes. Invalid specs never get here: they wait for a change.
pub fn error_policy(ij: Arc<ImportJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.inc();
    let key = format!("{}/{}", ij.namespace().unwrap_or_default(), ij.name_any());
    let mut failures = ctx.failures.lock().expect("lock");
    let n = failures.entry(key).or_insert(0);
    *n += 1;
    let delay = Duration::from_secs((1u64 << (*n).min(9)).min(300));
    tracing::warn!(importjob = %ij.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn apply(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let name = ij.name_any();
    let status = ij.status.clone().unwrap_or_default();
    let previous = status.phase.as_deref().and_then(Phase::parse);
    if previous.is_some_and(Phase::is_terminal) {
        // Finished: the Job may already be gone (ttlSecondsAfterFinished); nothing to do.
        return Ok(Action::await_change());
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = match build_job(ij, &ctx.config) {
        Err(InvalidSpec(why)) => {
            let observed = Observed {
                phase: Phase::Invalid,
                reason: "InvalidSpec".into(),
                message: why,
            };
            write_status(ij, ctx, &observed, None).await?;
            return Ok(Action::await_change());
        }
        Ok(desired) => match jobs.get_opt(&name).await? {
            Some(existing) => existing,
            // Deleted by us after a fatal failure; this ImportJob is older than that.
            None if ctx.stopped.lock().expect("lock").contains(&uid(ij)) => {
                return Ok(Action::await_change())
            }
            None => match jobs.create(&PostParams::default(), &desired).await {
                Ok(created) => {
                    publish(
                        ctx,
                        ij,
                        EventType::Normal,
                        "JobCreated",
                        format!("created Job {name}"),
                    )
                    .await;
                    created
                }
                // Created meanwhile (another reconcile, or a previous leader): read it.
                Err(kube::Error::Api(e)) if e.code == 409 => jobs.get(&name).await?,
                Err(e) => return Err(e.into()),
            },
        },
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{JOB_ID_LABEL}={}", ij.spec.job_id);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let observed = observe(Some(&job), &pods);

    if observed.phase == Phase::Failed {
        record_failure(
            ctx,
            &ij.spec.job_id,
            &format!("{}: {}", observed.reason, observed.message),
        )
        .await?;
        if matches!(
            observed.reason.as_str(),
            "ImagePullBackOff"
                | "InvalidImageName"
                | "CreateContainerConfigError"
                | "CreateContainerError"
        ) {
            // It would only sit there until its deadline: stop it now.
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            ctx.stopped.lock().expect("lock").insert(uid(ij));
        }
    }
    write_status(ij, ctx, &observed, Some(&name)).await?;
    Ok(match observed.phase {
        Phase::Complete | Phase::Failed | Phase::Invalid => Action::await_change(),
        Phase::Running => Action::requeue(Duration::from_secs(60)),
        Phase::Pending => Action::requeue(Duration::from_secs(15)),
    })
}

/// Server-side apply of the operator's part of the status, only when it changes; an Event
/// on every phase transition.
async fn write_status(
    ij: &ImportJob,
    ctx: &Context,
    observed: &Observed,
    job_name: Option<&str>,
) -> Result<()> {
    let status = ij.status.clone().unwrap_or_default();
    let previous_conditions = status.conditions.clone().unwrap_or_default();
    let now = now();
    let conds = conditions(observed, &previous_conditions, ij.meta().generation, &now);
    let unchanged = status.phase.as_deref() == Some(observed.phase.as_str())
        && status.reason.as_deref() == Some(observed.reason.as_str())
        && status.message.as_deref() == Some(observed.message.as_str())
        && status.conditions.as_ref() == Some(&conds)
        && status.job_name.as_deref() == job_name;
    if unchanged {
        return Ok(());
    }
    let started = status.started_at.clone().or_else(|| {
        (observed.phase == Phase::Running || observed.phase.is_terminal()).then(|| now.clone())
    });
    let finished = observed
        .phase
        .is_terminal()
        .then(|| status.finished_at.clone().unwrap_or_else(|| now.clone()));
    let patch = json!({
        "apiVersion": "bulkimport.dev/v1alpha1",
        "kind": "ImportJob",
        "status": {
            "phase": observed.phase.as_str(),
            "reason": observed.reason,
            "message": observed.message,
            "jobName": job_name,
            "observedGeneration": ij.meta().generation,
            "startedAt": started,
            "finishedAt": finished,
            "conditions": conds,
        }
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
async fn record_failure(ctx: &Context, job_id: &str, reason: &str) -> Result<()> {
    let (Some(db), Ok(id)) = (&ctx.db, job_id.parse::<uuid::Uuid>()) else {
        return Ok(());
    };
    bulk_import_core::job::mark_failed(db, id, reason).await?;
    Ok(())
}

/// Deleting an ImportJob: its Job goes (and its pods, by background propagation), an
/// unfinished import is marked failed, and the objects go too with `OBJECT_RETENTION=delete`.
fn uid(ij: &ImportJob) -> String {
    ij.metadata.uid.clone().unwrap_or_default()
}

async fn cleanup(ij: &ImportJob, ctx: &Context) -> Result<Action> {
    ctx.stopped.lock().expect("lock").remove(&uid(ij));
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(&ij.name_any(), &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    record_failure(
        ctx,
        &ij.spec.job_id,
        "the ImportJob was deleted before the import finished",
    )
    .await?;
    if ctx.config.retention == Retention::Delete {
        if let Some(storage) = &ctx.storage {
            for key in [&ij.spec.source.key, &ij.spec.report.key] {
                // A key the validation rejects names no object of this import (the spec
                // never ran); failing on it would keep the ImportJob from being deleted.
                if !is_object_key(key) {
                    continue;
                }
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

/// Runs the controller until `shutdown` resolves. `store` receives the controller's cache of
/// ImportJobs, from which `/metrics` counts them by phase without API calls.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    store: Arc<std::sync::OnceLock<kube::runtime::reflector::Store<ImportJob>>>,
) {
    let ns = ctx.config.namespace.clone();
    let client = ctx.client.clone();
    let importjobs: Api<ImportJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod_ns = ns.clone();
    let controller = Controller::new(importjobs, watcher::Config::default());
    let _ = store.set(controller.store());
    controller
        .owns(jobs, watcher::Config::default().labels(MANAGED))
        .watches(
            pods,
            watcher::Config::default().labels(MANAGED),
            move |pod: Pod| {
                let id = pod
                    .labels()
                    .get(JOB_ID_LABEL)
                    .and_then(|id| id.parse().ok());
                id.map(|id| ObjectRef::<ImportJob>::new(&resource_name(id)).within(&pod_ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
