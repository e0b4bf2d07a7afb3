//! The bounds of an import's life that the operator enforces, decided with the time and the
//! configuration in hand (`plan::mirror` applies them): how long a pod may wait for its image
//! or its Secret (`IMPORTER_START_GRACE_SECONDS`), how many "try later" exits a Job may have
//! (`IMPORTER_TRY_LATER_MAX`), and how far an OOM-killed importer's memory limit grows
//! (doubled per kill, up to `IMPORTER_MEMORY_LIMIT_MAX`).

use crate::{
    config::OperatorConfig,
    quantity::{bytes, format_bytes},
};
use bulk_import_core::crd::ImportJob;
use k8s_openapi::api::batch::v1::Job;
use std::time::Duration;

/// The limits a reconcile applies, and its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub now: chrono::DateTime<chrono::Utc>,
    pub start_grace: Duration,
    pub try_later_max: usize,
    pub memory_limit: String,
    pub memory_limit_max: String,
}

impl Limits {
    pub fn of(config: &OperatorConfig) -> Limits {
        Limits {
            now: chrono::Utc::now(),
            start_grace: config.start_grace,
            try_later_max: config.try_later_max,
            memory_limit: config.memory_limit.clone(),
            memory_limit_max: config.memory_limit_max.clone(),
        }
    }

    /// The memory limit `job` ran with (its container's), else the ImportJob's
    /// (`status.memoryLimit`), else the configured one.
    pub fn memory_limit_of(&self, ij: &ImportJob, job: Option<&Job>) -> String {
        job.and_then(|j| j.spec.as_ref()?.template.spec.as_ref())
            .and_then(|p| p.containers.first()?.resources.as_ref()?.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.clone())
            .or_else(|| ij.status.as_ref().and_then(|s| s.memory_limit.clone()))
            .unwrap_or_else(|| self.memory_limit.clone())
    }
}

/// The memory limit after an OOM kill at `current`: doubled, at most `max`; `None` when
/// `current` is at (or over) the ceiling, or either does not parse.
pub fn next_memory_limit(current: &str, max: &str) -> Option<String> {
    let (now, ceiling) = (bytes(current)?, bytes(max)?);
    (now < ceiling).then(|| format_bytes((now * 2).min(ceiling)))
}

/// When to look again at a pod waiting since `since` (the grace period's end, at most
/// `recheck` from now).
pub fn recheck_after(
    limits: &Limits,
    since: chrono::DateTime<chrono::Utc>,
    recheck: Duration,
) -> Duration {
    let deadline =
        since + chrono::Duration::from_std(limits.start_grace).unwrap_or(chrono::Duration::MAX);
    (deadline - limits.now)
        .to_std()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_secs(1), recheck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_doubles_up_to_the_ceiling() {
        assert_eq!(next_memory_limit("256Mi", "1Gi").as_deref(), Some("512Mi"));
        assert_eq!(next_memory_limit("512Mi", "1Gi").as_deref(), Some("1Gi"));
        assert_eq!(next_memory_limit("768Mi", "1Gi").as_deref(), Some("1Gi"));
        assert_eq!(next_memory_limit("1Gi", "1Gi"), None);
        assert_eq!(next_memory_limit("2Gi", "1Gi"), None);
        assert_eq!(next_memory_limit("lots", "1Gi"), None);
    }
}
