//! What a reconcile works with ([`Context`]): the client, the configuration, the database
//! and storage, the Event recorder and the caches of the Jobs and pods the operator manages;
//! and the reads a reconcile makes through it (the cached Job and pods, the row, a Job's
//! `FailedCreate` Event). Events are published and row failures recorded here too.

use crate::{config::OperatorConfig, job_template::job_name, metrics::Metrics, Error, Result};
use bulk_import_core::{
    crd::{ImportJob, JOB_ID_LABEL, OPERATOR_MANAGER},
    job::JobError,
    JobRow, Storage,
};
use k8s_openapi::api::{
    batch::v1::Job as KubeJob,
    core::v1::{Event as CoreEvent, Pod},
};
use kube::{
    api::{Api, ListParams},
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
    Client, Resource, ResourceExt,
};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use uuid::Uuid;

/// How long a reconcile waits for the Job and pod caches' first list.
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
    /// Admission: the ledger of importer Jobs and the queue (`crate::admission`).
    pub admission: crate::admission::Admission,
    /// Consecutive failures per ImportJob, for exponential backoff.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Whether `ij` (in `ns`) may create its Job now (`crate::admission`); if so, its slot
    /// is taken.
    pub fn admit(&self, ij: &ImportJob, ns: &str) -> crate::admission::Gate {
        self.admission.gate(&self.config, &self.caches.jobs, ij, ns)
    }

    /// A slot may have freed in `ns`: the ImportJobs admitted now are woken.
    pub fn slot_freed(&self, ns: &str) {
        self.admission
            .slot_freed(&self.config, &self.caches.jobs, ns)
    }

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
            admission: Default::default(),
            failures: Mutex::default(),
        }
    }
}

/// The import's row, when the operator has a database.
pub(crate) async fn read_row(ctx: &Context, id: Uuid) -> Result<Option<JobRow>> {
    match &ctx.db {
        Some(db) => Ok(bulk_import_core::repo::get(db, id).await?),
        None => Ok(None),
    }
}

/// The Job of this ImportJob in the cache (a Job of the same name owned by an earlier
/// ImportJob is not it).
pub(crate) fn cached_job(ctx: &Context, ij: &ImportJob, ns: &str) -> Option<Arc<KubeJob>> {
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
pub(crate) fn cached_pods(ctx: &Context, ns: &str, job_id: &str, job: &str) -> Vec<Pod> {
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

pub(crate) async fn caches_ready(ctx: &Context) -> Result<()> {
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
pub(crate) async fn failed_create_message(
    ctx: &Context,
    ns: &str,
    job: &str,
) -> Result<Option<String>> {
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

pub(crate) async fn publish(
    ctx: &Context,
    ij: &ImportJob,
    type_: EventType,
    reason: &str,
    note: String,
) {
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
pub(crate) async fn record_failure(
    ctx: &Context,
    id: Option<Uuid>,
    error: &JobError,
) -> Result<()> {
    let (Some(db), Some(id)) = (&ctx.db, id) else {
        return Ok(());
    };
    bulk_import_core::repo::fail(db, id, error).await?;
    Ok(())
}
