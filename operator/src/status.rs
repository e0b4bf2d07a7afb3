//! What an ImportJob's status should say, derived purely from its Job and the Job's pods:
//! phase, a machine-readable reason (`OOMKilled`, `ImagePullBackOff`, `DeadlineExceeded`,
//! `BackoffLimitExceeded`, …) and the `Complete` / `Failed` conditions.

use bulk_import_core::crd::Condition;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Complete,
    Failed,
    /// The spec cannot be run; waits for a change.
    Invalid,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Complete => "Complete",
            Phase::Failed => "Failed",
            Phase::Invalid => "Invalid",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Complete | Phase::Failed)
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Pending,
            Phase::Running,
            Phase::Complete,
            Phase::Failed,
            Phase::Invalid,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub phase: Phase,
    pub reason: String,
    pub message: String,
}

impl Observed {
    fn new(phase: Phase, reason: &str, message: impl Into<String>) -> Observed {
        Observed {
            phase,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Waiting reasons that will not fix themselves: the Job is failed rather than left to run
/// into its deadline.
const FATAL_WAITING: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn container_states(
    pod: &Pod,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
}

/// A container of any pod that was OOM-killed (now or in its last run).
fn oom_killed(pods: &[Pod]) -> bool {
    pods.iter().flat_map(container_states).any(|c| {
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        [now, last]
            .into_iter()
            .flatten()
            .any(|t| t.reason.as_deref() == Some("OOMKilled"))
    })
}

fn fatal_waiting(pods: &[Pod]) -> Option<(String, String)> {
    pods.iter().flat_map(container_states).find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref()?;
        FATAL_WAITING
            .contains(&reason)
            .then(|| (reason.to_string(), w.message.clone().unwrap_or_default()))
    })
}

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

pub fn observe(job: Option<&Job>, pods: &[Pod]) -> Observed {
    let Some(job) = job else {
        return Observed::new(
            Phase::Pending,
            "JobNotCreated",
            "waiting for the importer Job",
        );
    };
    if job_condition(job, "Complete").is_some() {
        return Observed::new(Phase::Complete, "Succeeded", "the import finished");
    }
    if let Some(failed) = job_condition(job, "Failed") {
        let job_reason = failed.reason.clone().unwrap_or_else(|| "Failed".into());
        let message = failed.message.clone().unwrap_or_default();
        if oom_killed(pods) {
            return Observed::new(
                Phase::Failed,
                "OOMKilled",
                format!("the importer ran out of memory ({job_reason}: {message})"),
            );
        }
        return match job_reason.as_str() {
            "PodFailurePolicy" => Observed::new(
                Phase::Failed,
                "ImporterFailed",
                "the importer recorded a permanent failure",
            ),
            "DeadlineExceeded" => Observed::new(
                Phase::Failed,
                "DeadlineExceeded",
                format!("the Job ran past its deadline: {message}"),
            ),
            _ => Observed::new(Phase::Failed, &job_reason, message),
        };
    }
    if let Some((reason, message)) = fatal_waiting(pods) {
        return Observed::new(Phase::Failed, &reason, message);
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    let running = pods
        .iter()
        .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    if active > 0 || running {
        if oom_killed(pods) {
            return Observed::new(
                Phase::Running,
                "RetryingAfterOOMKilled",
                "a previous attempt ran out of memory; retrying",
            );
        }
        return Observed::new(Phase::Running, "Running", "the importer is running");
    }
    Observed::new(Phase::Pending, "JobCreated", "waiting for the importer pod")
}

/// The `Complete` and `Failed` conditions for an observation, keeping the transition time
/// of a condition whose status did not change.
pub fn conditions(
    observed: &Observed,
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let make = |type_: &str, on: bool| {
        let status = if on { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: observed.reason.clone(),
            message: observed.message.clone(),
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    vec![
        make("Complete", observed.phase == Phase::Complete),
        make("Failed", observed.phase == Phase::Failed),
    ]
}
