//! The bounds of an import's life that the operator enforces, decided with the time and the
//! configuration in hand (`plan::mirror` applies them): how long a pod may wait for its image
//! or its Secret (`IMPORTER_START_GRACE_SECONDS`), how many "try later" exits a Job may have
//! (`IMPORTER_TRY_LATER_MAX`), and how far an OOM-killed importer's memory limit grows
//! (doubled per kill, up to `IMPORTER_MEMORY_LIMIT_MAX`).

use crate::config::OperatorConfig;
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

const UNITS: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// A memory quantity (`256Mi`, `1G`, `1048576`) in bytes; no fractions or exponents.
pub fn bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1));
    number.parse::<u128>().ok()?.checked_mul(factor)
}

/// Bytes as a quantity, in the largest binary unit that divides them.
pub fn format_bytes(b: u128) -> String {
    UNITS[..6]
        .iter()
        .rev()
        .find(|(_, f)| b >= *f && b.is_multiple_of(*f))
        .map(|(suffix, f)| format!("{}{suffix}", b / f))
        .unwrap_or_else(|| b.to_string())
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
    fn quantities_parse_and_format() {
        assert_eq!(bytes("256Mi"), Some(256 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1048576"), Some(1 << 20));
        assert_eq!(bytes("1.5Gi"), None);
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1_000_000_000), "1000000000");
    }

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
