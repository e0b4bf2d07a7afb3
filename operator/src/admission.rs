//! Admission on Kubernetes: at most `MAX_ACTIVE_IMPORTS` importer Jobs at once (and
//! `MAX_ACTIVE_IMPORTS_PER_ORG` per organization); an ImportJob that would create one more
//! waits in phase `Queued` with its `status.queuePosition` (and the row's
//! `queue_position`), and is reconciled again every [`QUEUE_RECHECK`] until a slot is free.
//! The decision is `bulk_import_core::admission::admit`; this module gathers what it
//! needs and keeps the ledger.
//!
//! Reconciles run concurrently and the Job cache lags behind the Jobs just created: each
//! decision is made under one lock ([`Admission::gate`]) over the cached unfinished Jobs
//! plus the ledger of Jobs this operator created and the cache has not shown yet, and an
//! admitted ImportJob enters the ledger before the lock is released. So two reconciles
//! never both take the last slot. The other ImportJobs a decision admits, and those that an
//! ended import's slot admits, are reconciled at once (the controller's `reconcile_on`)
//! rather than at their next recheck.

use crate::{
    config::OperatorConfig,
    job_template::job_name,
    plan::previous_phase,
    status::{job_finished, Phase},
};
use bulk_import_core::{
    admission::{admit, Decision, Limits, Waiting},
    crd::ImportJob,
};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::{
    runtime::reflector::{ObjectRef, Store},
    ResourceExt,
};
use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};
use tokio::sync::mpsc::UnboundedSender;

/// How often a queued ImportJob is looked at again (a slot may have freed).
pub const QUEUE_RECHECK: Duration = Duration::from_secs(2);
/// A ledger entry the cache never showed (the Job vanished at once) is dropped after this.
const LEDGER_TTL: Duration = Duration::from_secs(300);

/// The ledger of Jobs created and not yet in the cache, and the cache of ImportJobs (the
/// queue), set when the controller starts.
#[derive(Default)]
pub struct Admission {
    /// `namespace/job name` → its organization and when it was admitted.
    ledger: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    importjobs: OnceLock<Store<ImportJob>>,
    waker: OnceLock<UnboundedSender<ObjectRef<ImportJob>>>,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Create the Job now (the slot is held in the ledger; [`Admission::release`] it if
    /// the Job is not created).
    Admitted,
    /// Wait: the position (1 is next), how many run and the limit.
    Queued {
        position: usize,
        running: usize,
        limit: usize,
    },
}

fn org(ij: &ImportJob) -> Option<i64> {
    ij.spec.organization.map(i64::from)
}

fn ledger_key(ns: &str, job: &str) -> String {
    format!("{ns}/{job}")
}

/// Waits for a slot: not ended, not invalid, not cancelled, not being deleted.
fn wants_a_slot(ij: &ImportJob) -> bool {
    let phase = previous_phase(ij);
    ij.metadata.deletion_timestamp.is_none()
        && ij.spec.cancel_requested != Some(true)
        && !phase.is_some_and(|p| p.is_terminal() || p == Phase::Invalid || p == Phase::Running)
}

fn waiting_entry(ij: &ImportJob) -> Waiting<String> {
    Waiting {
        key: ij.name_any(),
        org: org(ij),
        created: ij
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| format!("{:020}", t.0.as_second()))
            .unwrap_or_default(),
        name: ij.name_any(),
    }
}

impl Admission {
    /// The controller's cache of ImportJobs: the queue. Without it (tests of one
    /// reconcile), the queue is the ImportJob being reconciled alone.
    pub fn set_importjobs(&self, store: Store<ImportJob>) {
        let _ = self.importjobs.set(store);
    }

    /// Reconciles of the ImportJobs a decision admitted go through this (to the
    /// controller's `reconcile_on`), so that a free slot is taken at once.
    pub fn set_waker(&self, waker: UnboundedSender<ObjectRef<ImportJob>>) {
        let _ = self.waker.set(waker);
    }

    /// Whether `ij` (in `ns`) may create its Job now; if so, the slot is taken. The
    /// others the decision admits are woken.
    pub fn gate(
        &self,
        config: &OperatorConfig,
        jobs: &Store<KubeJob>,
        ij: &ImportJob,
        ns: &str,
    ) -> Gate {
        let mut ledger = self.ledger.lock().expect("lock");
        let (decision, running) = self.decide(config, jobs, ns, Some(ij), &mut ledger);
        let me = ij.name_any();
        self.wake(ns, decision.admitted.iter().filter(|k| **k != me));
        if decision.is_admitted(&me) {
            ledger.insert(ledger_key(ns, &job_name(ij)), (org(ij), Instant::now()));
            return Gate::Admitted;
        }
        Gate::Queued {
            position: decision.position(&me).unwrap_or(1),
            running,
            limit: config.max_active_imports,
        }
    }

    /// A slot may have freed (an import ended): wakes the ImportJobs that would be
    /// admitted now.
    pub fn slot_freed(&self, config: &OperatorConfig, jobs: &Store<KubeJob>, ns: &str) {
        let mut ledger = self.ledger.lock().expect("lock");
        let (decision, _) = self.decide(config, jobs, ns, None, &mut ledger);
        self.wake(ns, decision.admitted.iter());
    }

    fn wake<'a>(&self, ns: &str, names: impl Iterator<Item = &'a String>) {
        if let Some(waker) = self.waker.get() {
            for name in names {
                let _ = waker.send(ObjectRef::new(name).within(ns));
            }
        }
    }

    /// The decision over the ImportJobs waiting in `ns` (and `me`, which the cache may not
    /// show yet), given the unfinished Jobs in the cache and the ledger; and how many run.
    fn decide(
        &self,
        config: &OperatorConfig,
        jobs: &Store<KubeJob>,
        ns: &str,
        me: Option<&ImportJob>,
        ledger: &mut HashMap<String, (Option<i64>, Instant)>,
    ) -> (Decision<String>, usize) {
        let limits = Limits::new(config.max_active_imports, config.max_active_imports_per_org);
        let importjobs = self.importjobs.get();
        let owner_org = |job: &KubeJob| {
            let owner = job
                .owner_references()
                .iter()
                .find(|o| o.kind == "ImportJob")?;
            let ij = importjobs?.get(&ObjectRef::new(&owner.name).within(ns))?;
            org(&ij)
        };
        let jobs = jobs.state();
        let in_ns = |j: &KubeJob| j.namespace().as_deref() == Some(ns);
        // Jobs the cache shows are counted from the cache from now on.
        ledger.retain(|key, (_, at)| {
            at.elapsed() < LEDGER_TTL
                && !jobs
                    .iter()
                    .any(|j| in_ns(j) && ledger_key(ns, &j.name_any()) == *key)
        });
        let mut running: Vec<Option<i64>> = jobs
            .iter()
            .filter(|j| in_ns(j) && !job_finished(j))
            .map(|j| owner_org(j))
            .collect();
        running.extend(ledger.values().map(|(org, _)| *org));
        let has_job = |ij: &ImportJob| {
            let name = job_name(ij);
            ledger.contains_key(&ledger_key(ns, &name))
                || jobs.iter().any(|j| in_ns(j) && j.name_any() == name)
        };
        let me_name = me.map(|ij| ij.name_any());
        let mut waiting: Vec<Waiting<String>> = importjobs
            .map(|s| s.state())
            .unwrap_or_default()
            .iter()
            .filter(|other| other.namespace().as_deref() == Some(ns))
            .filter(|other| Some(other.name_any()) != me_name)
            .filter(|other| wants_a_slot(other) && !has_job(other))
            .map(|other| waiting_entry(other))
            .collect();
        waiting.extend(me.map(waiting_entry));
        (admit(&waiting, &running, limits), running.len())
    }

    /// The Job of an admitted ImportJob was not created (an error, or it existed): its
    /// slot is counted from the cache again.
    pub fn release(&self, ns: &str, ij: &ImportJob) {
        let key = ledger_key(ns, &job_name(ij));
        self.ledger.lock().expect("lock").remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::OperatorConfig,
        fixtures::{job_for, Harness, ImportJobExt, JobExt},
    };

    fn harness(max: usize) -> Harness {
        let config = OperatorConfig {
            max_active_imports: max,
            ..OperatorConfig::defaults()
        };
        Harness::with(config, None, None)
    }

    fn named(name: &str) -> ImportJob {
        let mut ij = ImportJob::test();
        ij.metadata.name = Some(name.into());
        ij
    }

    fn ns(ij: &ImportJob) -> String {
        ij.namespace().expect("namespaced")
    }

    #[tokio::test]
    async fn the_ledger_counts_jobs_the_cache_has_not_shown_yet() {
        let h = harness(1);
        let (a, b) = (named("import-a"), named("import-b"));
        assert_eq!(h.ctx.admit(&a, &ns(&a)), Gate::Admitted);
        // The cache is still empty: only the ledger knows a's Job.
        let queued = Gate::Queued {
            position: 1,
            running: 1,
            limit: 1,
        };
        assert_eq!(h.ctx.admit(&b, &ns(&b)), queued);
        // a's Job could not be created: its slot is free again.
        h.ctx.admission.release(&ns(&a), &a);
        assert_eq!(h.ctx.admit(&b, &ns(&b)), Gate::Admitted);
    }

    #[tokio::test]
    async fn unfinished_jobs_in_the_cache_take_slots_and_finished_ones_do_not() {
        let mut h = harness(1);
        let (a, b) = (named("import-a"), named("import-b"));
        h.cache(Some(&job_for(&a)), &[]);
        assert!(matches!(
            h.ctx.admit(&b, &ns(&b)),
            Gate::Queued { running: 1, .. }
        ));
        h.cache(Some(&job_for(&a).condition("Complete", "", "")), &[]);
        assert_eq!(h.ctx.admit(&b, &ns(&b)), Gate::Admitted);
    }

    #[tokio::test]
    async fn concurrent_reconciles_never_admit_more_than_the_limit() {
        let h = harness(3);
        let ctx = h.ctx.clone();
        let admitted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let ctx = ctx.clone();
                    s.spawn(move || {
                        let ij = named(&format!("import-{i:02}"));
                        ctx.admit(&ij, &ns(&ij)) == Gate::Admitted
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count()
        });
        assert_eq!(admitted, 3);
    }
}
