//! The ImportJob controller: validate → build the Job (once) → observe the Job and its pods
//! (from the controller's caches: no API read per reconcile) → write the status (server-side
//! apply, field manager `bulk-import-operator`, the only writer of ImportJob status), the
//! Postgres row when the importer could not, and Events on transitions. No finalizer: a
//! deleted ImportJob's import is ended by the sweep (`crate::sweep`).
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
    actions::{cancel, carry_out, create, delete_job, expire, just_finished, retry},
    admission::Gate,
    adopt::{row_of, warn_unlabeled, Refused},
    config::OperatorConfig,
    context::{cached_job, cached_pods, caches_ready, failed_create_message, Caches, Context},
    job_template::{job_name, validate, INSTANCE_LABEL},
    lifecycle::Limits,
    metrics::Metrics,
    plan::{mirror, plan, Plan, Seen, Then, MIRROR_EVERY},
    queued,
    status::{job_finished, Observed, Phase},
    status_apply::write_status,
    sweep::{release_legacy_finalizer, LEGACY_FINALIZER},
    Error, Result,
};
use bulk_import_core::{
    crd::{job_id_of, resource_name, ImportJob, JOB_ID_LABEL},
    retry::Policy,
    Storage,
};
use futures_util::StreamExt;
use k8s_openapi::api::{batch::v1::Job as KubeJob, core::v1::Pod};
use kube::{
    api::Api,
    runtime::{
        controller::{Action, Controller},
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Client, Resource, ResourceExt,
};
use sqlx::PgPool;
use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

const MANAGED: &str = "app.kubernetes.io/managed-by=bulk-import-operator";

/// Reconciles one ImportJob: no finalizer (see `crate::sweep`): one of before is removed,
/// one being deleted is left to the garbage collector, any other is applied.
pub async fn reconcile(ij: Arc<ImportJob>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let key = format!("{ns}/{}", ij.name_any());
    let action = if ij.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        release_legacy_finalizer(&ij, &ctx).await?
    } else if ij.meta().deletion_timestamp.is_some() {
        Action::await_change()
    } else {
        apply(&ij, &ctx).await?
    };
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
    let pods = cached_pods(ctx, &ns, &job_id_of(ij), &name);
    // Read after the caches: the row is at least as new as what they show.
    // (A hand-written ImportJob's row is created here.)
    let row = match row_of(ij, ctx, id.as_ref().ok().copied()).await? {
        Ok(row) => row,
        Err(refused) => return show_refused(ij, ctx, refused).await,
    };
    let limits = Limits::of(&ctx.config);
    match plan(ij, &id, cached.as_deref(), &pods, row.as_ref(), &limits) {
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
            let running = cached.is_some_and(|j| !job_finished(&j));
            cancel(ij, ctx, id, running, &jobs).await
        }
        Plan::ShowEnded(ended) => {
            write_status(ij, ctx, &ended, Some(&name), row.as_ref()).await?;
            Ok(just_finished(ctx))
        }
        Plan::Create(id) => admit_and_create(ij, ctx, id, &pods, row, &jobs, &limits).await,
        Plan::Mirror(mut m) => {
            if m.look_for_failed_create {
                if let Some(message) = failed_create_message(ctx, &ns, &name).await? {
                    let job = cached.as_deref().expect("mirroring a cached Job");
                    let seen = Seen::FailedCreate(&message);
                    m = mirror(ij, m.id, job, &pods, row.as_ref(), seen, &limits);
                }
            }
            let ended = m.then == Then::Finished;
            let action = carry_out(ij, ctx, m, &name, row, &jobs).await?;
            if ended {
                // Its slot is free: the next queued ImportJob need not wait for its recheck.
                ctx.slot_freed(&ns);
            }
            Ok(action)
        }
    }
}

/// A hand-written ImportJob the operator cannot take (`crate::adopt`): `Failed` with why.
async fn show_refused(ij: &ImportJob, ctx: &Context, refused: Refused) -> Result<Action> {
    let Refused { reason, message } = refused;
    let observed = Observed::new(Phase::Failed, reason, message);
    write_status(ij, ctx, &observed, None, None).await?;
    Ok(Action::await_change())
}

/// No Job yet: if admitted (`crate::admission`), create it (the row no longer queued
/// first) and mirror it; else wait `Queued`. The slot is given back when the Job is not
/// created (an error, or it existed: then the cache counts it).
async fn admit_and_create(
    ij: &ImportJob,
    ctx: &Context,
    id: uuid::Uuid,
    pods: &[Pod],
    row: Option<bulk_import_core::JobRow>,
    jobs: &Api<KubeJob>,
    limits: &Limits,
) -> Result<Action> {
    let ns = ij.namespace().ok_or(Error::MissingNamespace)?;
    let gate = ctx.admit(ij, &ns);
    if gate != Gate::Admitted {
        return queued::queue(ij, ctx, id, gate, row.as_ref()).await;
    }
    let created = async {
        queued::clear_position(ctx, id, row.as_ref()).await?;
        create(ij, ctx, id, jobs).await
    };
    let created = created.await;
    if !matches!(created, Ok(Some(_))) {
        ctx.admission.release(&ns, ij);
    }
    let Some(created) = created? else {
        return Ok(Action::requeue(MIRROR_EVERY));
    };
    let m = mirror(ij, id, &created, pods, row.as_ref(), Seen::Created, limits);
    carry_out(ij, ctx, m, &job_name(ij), row, jobs).await
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
    // The sweep waits for the ImportJob cache's first full list (`crate::sweep`).
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let ij_stream = watcher(importjobs, config_of(None))
        .default_backoff()
        .reflect(ij_writer)
        // After `reflect`: at `InitDone` the cache already holds the whole list.
        .inspect(move |item| {
            watch_metrics.note_watch(item.is_ok());
            if matches!(item, Ok(watcher::Event::InitDone)) {
                listed_tx.send_replace(true);
            }
        })
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
    ctx.admission.set_importjobs(ij_reader.clone());
    let woken = admission_wakeups(&ctx);
    let pod_owner = pod_owner(ij_reader.clone(), ns.clone());
    let beside = companions(&ctx, &ij_reader, listed, instance);
    Controller::for_stream(ij_stream, ij_reader)
        .reconcile_on(woken)
        .owns_stream(job_stream)
        .watches_stream(pod_stream, pod_owner)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    for task in beside {
        task.abort();
    }
}

/// The ImportJobs an admission decision lets start, reconciled at once rather than at their
/// next recheck (`crate::admission`).
fn admission_wakeups(ctx: &Context) -> impl futures_util::Stream<Item = ObjectRef<ImportJob>> {
    let (waker, woken) = tokio::sync::mpsc::unbounded_channel();
    ctx.admission.set_waker(waker);
    futures_util::stream::unfold(woken, |mut rx| async move {
        rx.recv().await.map(|woken| (woken, rx))
    })
}

/// The tasks beside the controller, stopped with it: the sweep of imports whose ImportJob is
/// gone (once the ImportJob cache is `listed`), and with a release, the Warning Event for
/// ImportJobs without its label (they are not taken).
fn companions(
    ctx: &Arc<Context>,
    importjobs: &Store<ImportJob>,
    listed: tokio::sync::watch::Receiver<bool>,
    instance: Option<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(crate::sweep::run(
        ctx.clone(),
        importjobs.clone(),
        listed,
    ))];
    if let Some(instance) = instance {
        let api: Api<ImportJob> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
        tasks.push(tokio::spawn(warn_unlabeled_ones(
            api,
            ctx.clone(),
            instance,
        )));
    }
    tasks
}

/// The ImportJob a pod runs for, by its job id label: `import-<id>`, or an ImportJob written
/// by hand (its own name, its uid as the job id).
fn pod_owner(
    importjobs: Store<ImportJob>,
    ns: String,
) -> impl Fn(Pod) -> Option<ObjectRef<ImportJob>> {
    move |pod: Pod| {
        let id = pod.labels().get(JOB_ID_LABEL)?.clone();
        match importjobs.find(|ij| job_id_of(ij) == id) {
            Some(ij) => Some(ObjectRef::from_obj(&*ij)),
            None => {
                let id = id.parse().ok()?;
                Some(ObjectRef::<ImportJob>::new(&resource_name(id)).within(&ns))
            }
        }
    }
}

/// Watches every ImportJob of the namespace and warns, once per ImportJob, about those
/// without the instance label ([`warn_unlabeled`]).
async fn warn_unlabeled_ones(api: Api<ImportJob>, ctx: Arc<Context>, instance: String) {
    let mut warned = std::collections::HashSet::new();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let Ok(ij) = item else { continue };
        let uid = ij.metadata.uid.clone().unwrap_or_default();
        if !ij.labels().contains_key(INSTANCE_LABEL) && warned.insert(uid) {
            warn_unlabeled(&ctx, &ij, &instance).await;
        }
    }
}
