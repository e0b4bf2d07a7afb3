//! Leader election with a coordination.k8s.io Lease, so that two replicas are safe: only the
//! holder reconciles. Writes use the Lease's resourceVersion, so two candidates cannot both
//! win; a holder that cannot renew within the lease duration stops reconciling.

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::{Api, ObjectMeta, PostParams},
    Client,
};
use std::time::Duration;

pub const LEASE_NAME: &str = "bulk-import-operator";
pub const LEASE_SECONDS: i32 = 15;
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, identity: &str) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
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
        let now = Timestamp::now();
        match self.api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                    (Some(MicroTime(renewed)), Some(secs)) => {
                        *renewed + SignedDuration::from_secs(i64::from(secs)) < now
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
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown), so that another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        if let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? {
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
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
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
}
