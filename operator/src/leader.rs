//! Leader election with a coordination.k8s.io Lease, so that two replicas are safe: only the
//! holder reconciles. Writes use the Lease's resourceVersion, so two candidates cannot both
//! win; a holder that cannot renew within the lease duration stops reconciling.
//!
//! Expiry is judged as client-go does: by this process's own clock, from the moment it saw
//! the Lease's record change — never by comparing another node's `renewTime` with the local
//! clock, so skewed node clocks cannot make a live Lease look expired. A candidate that first
//! sees a Lease waits a whole lease duration before it may take it.

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    api::{Api, ObjectMeta, PostParams},
    Client,
};
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// The default Lease name (`LEASE_NAME`; the chart gives each release its own).
pub const LEASE_NAME: &str = "bulk-import-operator";
pub const LEASE_SECONDS: i32 = 15;
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The last record seen and when (by this process's clock) it was first seen.
    observed: Mutex<Option<(Record, Instant)>>,
}

/// What identifies one renewal of a Lease.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
    duration: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
            duration: spec.lease_duration_seconds,
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: Mutex::new(None),
        }
    }

    /// Notes the record seen at `now`; returns since when (local clock) it has been the same.
    fn observe(&self, record: Record, now: Instant) -> Instant {
        let mut observed = self.observed.lock().expect("lock");
        match &*observed {
            Some((seen, since)) if *seen == record => *since,
            _ => {
                *observed = Some((record, now));
                now
            }
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let same_holder =
            previous.and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: if same_holder {
                previous.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if same_holder {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }

    /// Takes the Lease if it is free, expired or ours (renewing it); `false` when someone
    /// else holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        self.try_acquire_at(Instant::now()).await
    }

    /// `try_acquire` with the local clock reading given (tests step it).
    async fn try_acquire_at(&self, local: Instant) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(Record::of(&created.spec.unwrap_or_default()), local);
                        Ok(true)
                    }
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                // Since when this record has been seen unchanged, by our own clock.
                let since = self.observe(Record::of(&spec), local);
                let expired = match spec.lease_duration_seconds {
                    Some(secs) if secs > 0 => {
                        local.duration_since(since) > Duration::from_secs(secs as u64)
                    }
                    _ => true,
                };
                if !(ours || free || expired) {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(Some(&spec), now));
                // replace carries the resourceVersion we read: a concurrent winner makes it 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(written) => {
                        self.observe(Record::of(&written.spec.unwrap_or_default()), local);
                        Ok(true)
                    }
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown), so that another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await? {
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                lease.spec = Some(LeaseSpec {
                    holder_identity: None,
                    renew_time: None,
                    acquire_time: None,
                    ..spec
                });
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Tries to take the Lease every `RETRY_EVERY` until it has it (the `Instant` its
    /// successful attempt started, like the renewTime it wrote) or `stop`. Each attempt is
    /// bounded (kube's client retries a 503 for minutes): a standby must try again promptly
    /// once the API server is back.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Instant> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let attempt = Instant::now();
            match tokio::time::timeout(RENEW_EVERY, self.try_acquire()).await {
                Ok(Ok(true)) => return Some(attempt),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election failed"),
                Err(_) => tracing::warn!("leader election timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Renews the Lease every `RENEW_EVERY` until `stop`; cancels `lost` when it was taken by
    /// another replica or could not be renewed in time. The deadline holds whatever a call
    /// does (kube's client retries 503/429 for minutes): a renewal is cut off when the last
    /// successful one (timed from its start, like the renewTime it wrote) is older than the
    /// lease minus a margin, before others may take it. Hands the elector back at the end
    /// (to release the Lease).
    pub fn keep_renewing(
        self,
        acquired_at: Instant,
        stop: CancellationToken,
        lost: CancellationToken,
    ) -> tokio::task::JoinHandle<LeaderElector> {
        tokio::spawn(async move {
            let give_up = Duration::from_secs(LEASE_SECONDS as u64 - 5);
            let mut renewed_at = acquired_at;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = stop.cancelled() => break,
                }
                let attempt = Instant::now();
                let deadline = tokio::time::Instant::from_std(renewed_at + give_up);
                match tokio::time::timeout_at(deadline, self.try_acquire()).await {
                    Ok(Ok(true)) => renewed_at = attempt,
                    Ok(Ok(false)) => {
                        tracing::error!("lost the Lease to another replica");
                        lost.cancel();
                        break;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not renew the Lease"),
                    Err(_) => {
                        tracing::error!("could not renew the Lease in time; stopping");
                        lost.cancel();
                        break;
                    }
                }
            }
            self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{lease_path, leases_path, Expect, MockApi, NS};
    use k8s_openapi::jiff::SignedDuration;
    use serde_json::Value;

    const ME: &str = "operator-a";
    const OTHER: &str = "operator-b";

    fn lease(
        holder: Option<&str>,
        renewed: Timestamp,
        acquired: Timestamp,
        transitions: i32,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(NS.into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(MicroTime(acquired)),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    fn ago(secs: i64) -> Timestamp {
        Timestamp::now() - SignedDuration::from_secs(secs)
    }

    fn micro(t: Timestamp) -> Value {
        serde_json::to_value(MicroTime(t)).unwrap()
    }

    fn elector(api: &MockApi) -> LeaderElector {
        LeaderElector::new(api.client(), NS, LEASE_NAME, ME)
    }

    #[tokio::test]
    async fn a_new_holder_counts_a_transition_and_a_renewal_keeps_the_acquire_time() {
        let me = elector(&MockApi::new());
        let now = Timestamp::now();
        let theirs = lease(Some(OTHER), ago(60), ago(600), 4).spec.unwrap();
        let taken = me.spec(Some(&theirs), now);
        assert_eq!(taken.holder_identity.as_deref(), Some(ME));
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        assert_eq!(taken.renew_time, Some(MicroTime(now)));
        assert_eq!(taken.lease_duration_seconds, Some(LEASE_SECONDS));

        let later = now + SignedDuration::from_secs(5);
        let renewed = me.spec(Some(&taken), later);
        assert_eq!(renewed.lease_transitions, Some(5));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_and_taken() {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME)).fail(404, "NotFound"),
                    Expect::post(leases_path())
                        .body(|b| {
                            assert_eq!(b["metadata"]["name"], LEASE_NAME);
                            assert_eq!(b["spec"]["holderIdentity"], ME);
                            assert_eq!(b["spec"]["leaseDurationSeconds"], LEASE_SECONDS);
                            assert!(b["spec"]["renewTime"].is_string(), "{b:#}");
                        })
                        .echo(201),
                ],
                elector.try_acquire(),
            )
            .await;
        assert!(won.unwrap());
    }

    #[tokio::test]
    async fn a_lease_someone_else_renews_is_left_alone() {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let (won, _) = api
            .serve(
                vec![Expect::get(lease_path(LEASE_NAME))
                    .reply(200, lease(Some(OTHER), ago(2), ago(600), 1))],
                elector.try_acquire(),
            )
            .await;
        assert!(!won.unwrap(), "no PUT: the scenario has none");
    }

    /// The holder's node clock is a minute behind: its fresh renewals carry a `renewTime` a
    /// minute old. Judged by `renewTime` against the local clock (the bug), the standby took a
    /// live Lease at once; judged by when this process saw the record change, it waits.
    #[tokio::test]
    async fn a_skewed_renew_time_does_not_make_a_live_lease_look_expired() {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let t0 = Instant::now();
        let mut renewed = ago(60);
        for step in 0..4u64 {
            // The holder renews every 5 s (by its own, skewed, clock).
            renewed += SignedDuration::from_secs(5);
            let (won, _) = api
                .serve(
                    vec![Expect::get(lease_path(LEASE_NAME))
                        .reply(200, lease(Some(OTHER), renewed, ago(600), 4))],
                    elector.try_acquire_at(t0 + Duration::from_secs(5 * step)),
                )
                .await;
            assert!(!won.unwrap(), "step {step}: no PUT, the Lease is alive");
        }
    }

    #[tokio::test]
    async fn a_lease_unchanged_for_its_duration_by_our_clock_is_taken_over_with_its_resource_version(
    ) {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let t0 = Instant::now();
        // Its renewTime is long past, but this process has only just seen it: it waits.
        let stale = lease(Some(OTHER), ago(60), ago(600), 4);
        let (won, _) = api
            .serve(
                vec![Expect::get(lease_path(LEASE_NAME)).reply(200, stale.clone())],
                elector.try_acquire_at(t0),
            )
            .await;
        assert!(!won.unwrap(), "first sight: no PUT");
        let (won, _) = api
            .serve(
                vec![Expect::get(lease_path(LEASE_NAME)).reply(200, stale.clone())],
                elector.try_acquire_at(t0 + Duration::from_secs(LEASE_SECONDS as u64 - 1)),
            )
            .await;
        assert!(!won.unwrap(), "within the lease duration: no PUT");
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME)).reply(200, stale),
                    Expect::put(lease_path(LEASE_NAME))
                        .body(|b| {
                            // The resourceVersion read makes a concurrent winner's write fail.
                            assert_eq!(b["metadata"]["resourceVersion"], "7");
                            assert_eq!(b["spec"]["holderIdentity"], ME);
                            assert_eq!(b["spec"]["leaseTransitions"], 5);
                            assert_eq!(b["spec"]["acquireTime"], b["spec"]["renewTime"]);
                        })
                        .echo(200),
                ],
                elector.try_acquire_at(t0 + Duration::from_secs(LEASE_SECONDS as u64 + 1)),
            )
            .await;
        assert!(won.unwrap());
    }

    #[tokio::test]
    async fn the_lease_name_is_the_configured_one() {
        // Two releases in one namespace: each has its own Lease.
        let mut api = MockApi::new();
        let elector = LeaderElector::new(api.client(), NS, "other-release-operator", ME);
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path("other-release-operator")).fail(404, "NotFound"),
                    Expect::post(leases_path())
                        .body(|b| assert_eq!(b["metadata"]["name"], "other-release-operator"))
                        .echo(201),
                ],
                elector.try_acquire(),
            )
            .await;
        assert!(won.unwrap());
    }

    #[tokio::test]
    async fn its_own_lease_is_renewed_keeping_the_acquire_time() {
        let acquired = ago(600);
        let mut api = MockApi::new();
        let elector = elector(&api);
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME))
                        .reply(200, lease(Some(ME), ago(5), acquired, 2)),
                    Expect::put(lease_path(LEASE_NAME))
                        .body(move |b| {
                            assert_eq!(b["spec"]["holderIdentity"], ME);
                            assert_eq!(b["spec"]["leaseTransitions"], 2);
                            assert_eq!(b["spec"]["acquireTime"], micro(acquired));
                            assert_ne!(b["spec"]["renewTime"], micro(acquired));
                        })
                        .echo(200),
                ],
                elector.try_acquire(),
            )
            .await;
        assert!(won.unwrap());
    }

    #[tokio::test]
    async fn a_conflict_means_another_replica_won() {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME)).fail(404, "NotFound"),
                    Expect::post(leases_path()).fail(409, "AlreadyExists"),
                ],
                elector.try_acquire(),
            )
            .await;
        assert!(!won.unwrap());
        let (won, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME))
                        .reply(200, lease(None, ago(60), ago(60), 1)),
                    Expect::put(lease_path(LEASE_NAME)).fail(409, "Conflict"),
                ],
                elector.try_acquire(),
            )
            .await;
        assert!(!won.unwrap());
        let (result, _) = api
            .serve(
                vec![Expect::get(lease_path(LEASE_NAME)).fail(500, "InternalError")],
                elector.try_acquire(),
            )
            .await;
        assert!(result.is_err(), "other errors are reported");
    }

    #[tokio::test]
    async fn release_frees_only_its_own_lease() {
        let mut api = MockApi::new();
        let elector = elector(&api);
        let (result, _) = api
            .serve(
                vec![
                    Expect::get(lease_path(LEASE_NAME))
                        .reply(200, lease(Some(ME), ago(1), ago(100), 3)),
                    Expect::put(lease_path(LEASE_NAME))
                        .body(|b| {
                            let spec = &b["spec"];
                            assert!(spec.get("holderIdentity").is_none(), "{b:#}");
                            assert!(spec.get("renewTime").is_none(), "{b:#}");
                            assert_eq!(spec["leaseTransitions"], 3);
                        })
                        .echo(200),
                ],
                elector.release(),
            )
            .await;
        result.unwrap();
        let (result, _) = api
            .serve(
                vec![Expect::get(lease_path(LEASE_NAME))
                    .reply(200, lease(Some(OTHER), ago(1), ago(100), 3))],
                elector.release(),
            )
            .await;
        result.unwrap();
    }
}
