//! What an ImportJob's status should say, derived purely from its Job and the Job's pods:
//! phase, a machine-readable reason (`OOMKilled`, `ImagePullBackOff`, `DeadlineExceeded`,
//! `BackoffLimitExceeded`, …) and the `Complete` / `Failed` conditions.

use bulk_import_core::crd::Condition;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};

pub use bulk_import_core::phase::Phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub phase: Phase,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(phase: Phase, reason: &str, message: impl Into<String>) -> Observed {
        Observed {
            phase,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Waiting reasons that will not fix themselves: the Job is failed rather than left to run
/// into its deadline. `ErrImageNeverPull`: `imagePullPolicy: Never` and the image is not on
/// the node (kind without `kind load`), which no retry changes.
pub const FATAL_WAITING: [&str; 3] = [
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerError",
];

/// Waiting reasons that often fix themselves: a registry's rate limit or hiccup
/// (`ErrImagePull`, then `ImagePullBackOff`), a Secret or ConfigMap not synced yet
/// (`CreateContainerConfigError`). They are waited out for `IMPORTER_START_GRACE_SECONDS`
/// from the pod's start ([`waited_out`]), the status saying since when and until when, then
/// the import fails with that reason.
pub const WAITED_OUT: [&str; 3] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
];

/// What is being waited for, per [`WAITED_OUT`] reason.
fn waiting_for(reason: &str) -> &'static str {
    match reason {
        "CreateContainerConfigError" => "the importer's Secret or ConfigMap",
        _ => "the image pull",
    }
}

/// A [`WAITED_OUT`] observation, given since when the pod waits: still `Pending` within the
/// grace period (the message says since when and when it fails), `Failed` after it. Any
/// other observation is returned as it is.
pub fn waited_out(
    observed: Observed,
    since: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    grace: std::time::Duration,
) -> Observed {
    if observed.phase != Phase::Pending || !WAITED_OUT.contains(&observed.reason.as_str()) {
        return observed;
    }
    let what = waiting_for(&observed.reason);
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let deadline = since + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    if now >= deadline {
        return Observed::new(
            Phase::Failed,
            &observed.reason,
            format!(
                "waited for {what} since {} for longer than IMPORTER_START_GRACE_SECONDS ({}s): {}",
                fmt(since),
                grace.as_secs(),
                observed.message
            ),
        );
    }
    Observed::new(
        Phase::Pending,
        &observed.reason,
        format!(
            "waiting for {what} since {}, failing after {}: {}",
            fmt(since),
            fmt(deadline),
            observed.message
        ),
    )
}

/// Since when the Job's pods wait for a [`WAITED_OUT`] reason: the earliest start (or
/// creation) of a pod waiting so.
pub fn waiting_since(pods: &[Pod]) -> Option<chrono::DateTime<chrono::Utc>> {
    pods.iter()
        .filter(|p| {
            container_states(p).any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    .is_some_and(|r| WAITED_OUT.contains(&r))
            })
        })
        .filter_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(p.metadata.creation_timestamp.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0))
        })
        .min()
}

/// How many of the Job's pods ended with exit code 75, "try later" (ignored by the pod
/// failure policy: they count against no limit but `IMPORTER_TRY_LATER_MAX`).
pub fn tried_later(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| {
            container_states(p).any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == bulk_import_core::exit::TEMPORARY)
            })
        })
        .count()
}

fn container_states(
    pod: &Pod,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
}

/// A container of any pod that was OOM-killed (now or in its last run).
pub fn oom_killed(pods: &[Pod]) -> bool {
    pods.iter().flat_map(container_states).any(|c| {
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        [now, last]
            .into_iter()
            .flatten()
            .any(|t| t.reason.as_deref() == Some("OOMKilled"))
    })
}

/// The first container waiting for one of `reasons`: (reason, message).
fn waiting_for_one_of(pods: &[Pod], reasons: &[&str]) -> Option<(String, String)> {
    pods.iter().flat_map(container_states).find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref()?;
        reasons
            .contains(&reason)
            .then(|| (reason.to_string(), w.message.clone().unwrap_or_default()))
    })
}

/// A pod the scheduler cannot place (`PodScheduled=False`, reason `Unschedulable`): the
/// scheduler's message says why (insufficient cpu, taints, node selectors).
fn unschedulable(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let c = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
            .then(|| c.message.clone().unwrap_or_default())
    })
}

/// Whether the Job has finished (a `Complete` or `Failed` condition).
pub fn job_finished(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some()
}

/// The outcome the Postgres row records, for an ImportJob whose Job is gone (its TTL passed,
/// or it was deleted): the import is never run again, its status says what the row says.
pub fn from_row(status: bulk_import_core::JobStatus, error: Option<&str>) -> Option<Observed> {
    use bulk_import_core::JobStatus;
    match status {
        JobStatus::Done => Some(Observed::new(
            Phase::Complete,
            "Succeeded",
            "the import finished",
        )),
        JobStatus::Failed => {
            let error = error.unwrap_or("the import failed");
            // Stored as `<code>: <message>` (`JobError`); the operator's own findings are
            // `pod_failed: <Reason>: <message>` (OOMKilled, ImagePullBackOff, …): the same
            // reason again, not a vaguer one.
            let error = match error.split_once(": ") {
                Some(("pod_failed", rest)) => rest,
                _ => error,
            };
            Some(match error.split_once(": ") {
                Some((reason, message))
                    if reason.starts_with(|c: char| c.is_ascii_uppercase())
                        && reason.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    Observed::new(Phase::Failed, reason, message)
                }
                _ => Observed::new(Phase::Failed, "ImportFailed", error),
            })
        }
        JobStatus::Cancelled => Some(cancelled()),
        _ => None,
    }
}

/// What a cancelled import shows.
pub fn cancelled() -> Observed {
    Observed::new(
        Phase::Cancelled,
        "Cancelled",
        "the import was cancelled (spec.cancelRequested); what was committed stays",
    )
}

/// A Job with no pod whose pod creation was rejected (the Job controller's `FailedCreate`
/// Event: a ResourceQuota, a LimitRange, an admission webhook): it shows while it lasts.
pub fn failed_create(message: &str) -> Observed {
    Observed::new(Phase::Pending, "FailedCreate", message)
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

/// What the Job and its pods say. One piece on purpose: the order of the checks is the
/// precedence of the observations (complete, failed, a fatal waiting reason, unschedulable,
/// running, disrupted, retrying, pending), which reads best as one ladder.
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
    if let Some((reason, message)) = waiting_for_one_of(pods, &FATAL_WAITING) {
        return Observed::new(Phase::Failed, &reason, message);
    }
    // Waited out by the caller ([`waited_out`]), which knows the time.
    if let Some((reason, message)) = waiting_for_one_of(pods, &WAITED_OUT) {
        return Observed::new(Phase::Pending, &reason, message);
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    let running = pods
        .iter()
        .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    // `active` counts pending pods too: one the scheduler cannot place is not running.
    if !running {
        if let Some(message) = unschedulable(pods) {
            return Observed::new(Phase::Pending, "Unschedulable", message);
        }
    }
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
    // A disrupted pod (evicted, preempted, drained) does not count as a failure (the
    // podFailurePolicy ignores it) but the import is still under way: the Job starts another.
    let disrupted = pods.iter().any(|p| {
        p.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    });
    if disrupted {
        return Observed::new(
            Phase::Running,
            "Disrupted",
            "the pod was disrupted (evicted, preempted or its node drained); the Job starts another",
        );
    }
    // Between a failed attempt and the Job controller's next pod (its back-off is 10 s and
    // up): still under way, not back to Pending.
    let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
    if failed > 0 {
        if oom_killed(pods) {
            return Observed::new(
                Phase::Running,
                "RetryingAfterOOMKilled",
                "a previous attempt ran out of memory; retrying",
            );
        }
        return Observed::new(
            Phase::Running,
            "Retrying",
            format!("attempt {failed} failed; the Job starts another pod"),
        );
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
    let mut conditions = vec![
        make("Complete", observed.phase == Phase::Complete),
        make("Failed", observed.phase == Phase::Failed),
    ];
    // `kubectl wait --for=condition=Cancelled`: there once the import is cancelled.
    if observed.phase == Phase::Cancelled {
        conditions.push(make("Cancelled", true));
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use bulk_import_core::crd::ImportJob;

    const EARLIER: &str = "2026-01-01T00:00:00Z";
    const NOW: &str = "2026-01-01T01:00:00Z";

    fn ij() -> ImportJob {
        ImportJob::test()
    }

    fn failed(reason: &str) -> Job {
        job_for(&ij()).condition("Failed", reason, "from the Job controller")
    }

    fn phase_reason(o: &Observed) -> (Phase, &str) {
        (o.phase, o.reason.as_str())
    }

    #[test]
    fn no_job_yet_is_pending() {
        let o = observe(None, &[]);
        assert_eq!(phase_reason(&o), (Phase::Pending, "JobNotCreated"));
    }

    #[test]
    fn a_job_without_a_running_pod_is_pending() {
        let job = job_for(&ij());
        assert_eq!(
            phase_reason(&observe(Some(&job), &[])),
            (Phase::Pending, "JobCreated")
        );
        let creating = pod_for(&ij(), "a", "Pending").state(waiting("ContainerCreating", ""));
        assert_eq!(
            phase_reason(&observe(Some(&job), &[creating])),
            (Phase::Pending, "JobCreated"),
            "waiting for a reason that fixes itself is not a failure"
        );
    }

    #[test]
    fn an_active_job_or_a_running_pod_is_running() {
        let job = job_for(&ij()).active(1);
        assert_eq!(
            phase_reason(&observe(Some(&job), &[])),
            (Phase::Running, "Running")
        );
        let job = job_for(&ij());
        let pod = pod_for(&ij(), "a", "Running").state(running());
        assert_eq!(
            phase_reason(&observe(Some(&job), &[pod])),
            (Phase::Running, "Running")
        );
    }

    #[test]
    fn the_complete_condition_completes() {
        let job = job_for(&ij()).condition("Complete", "CompletionsReached", "done");
        let pod = pod_for(&ij(), "a", "Succeeded").state(terminated("Completed", 0));
        assert_eq!(
            phase_reason(&observe(Some(&job), &[pod])),
            (Phase::Complete, "Succeeded")
        );

        // A condition that is not True does not count.
        let mut job = job_for(&ij()).condition("Complete", "CompletionsReached", "done");
        job.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert_eq!(observe(Some(&job), &[]).phase, Phase::Pending);
    }

    #[test]
    fn an_oom_killed_pod_of_a_failed_job_is_reported_as_oom_killed() {
        let now = pod_for(&ij(), "a", "Failed").state(terminated("OOMKilled", 137));
        let o = observe(Some(&failed("BackoffLimitExceeded")), &[now]);
        assert_eq!(phase_reason(&o), (Phase::Failed, "OOMKilled"));
        assert!(o.message.contains("BackoffLimitExceeded"), "{}", o.message);

        // Seen in the container's last state (a restarted container) as well.
        let last = pod_for(&ij(), "b", "Failed")
            .state(terminated("Error", 1))
            .last_state(terminated("OOMKilled", 137));
        let o = observe(Some(&failed("DeadlineExceeded")), &[last]);
        assert_eq!(phase_reason(&o), (Phase::Failed, "OOMKilled"));
    }

    #[test]
    fn job_failure_reasons_map_to_status_reasons() {
        let pod = pod_for(&ij(), "a", "Failed").state(terminated("Error", 1));
        for (job_reason, reason) in [
            ("DeadlineExceeded", "DeadlineExceeded"),
            ("BackoffLimitExceeded", "BackoffLimitExceeded"),
            ("PodFailurePolicy", "ImporterFailed"),
        ] {
            let o = observe(Some(&failed(job_reason)), std::slice::from_ref(&pod));
            assert_eq!(phase_reason(&o), (Phase::Failed, reason), "{job_reason}");
        }
        let mut job = failed("x");
        job.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].reason = None;
        assert_eq!(
            phase_reason(&observe(Some(&job), &[])),
            (Phase::Failed, "Failed")
        );
    }

    #[test]
    fn a_pod_that_cannot_start_fails_the_import() {
        let job = job_for(&ij()).active(1);
        for reason in FATAL_WAITING {
            let pod = pod_for(&ij(), "a", "Pending").state(waiting(reason, "cannot start"));
            let o = observe(Some(&job), &[pod]);
            assert_eq!(phase_reason(&o), (Phase::Failed, reason));
            assert_eq!(o.message, "cannot start");
        }
    }

    #[test]
    fn image_pulls_and_missing_secrets_are_waited_out_for_the_grace_period() {
        let job = job_for(&ij()).active(1);
        let since = chrono::DateTime::parse_from_rfc3339(EARLIER)
            .unwrap()
            .to_utc();
        let grace = std::time::Duration::from_secs(300);
        for reason in WAITED_OUT {
            let pod =
                pod_for(&ij(), "a", "Pending").state(waiting(reason, "429 Too Many Requests"));
            let o = observe(Some(&job), &[pod]);
            assert_eq!(phase_reason(&o), (Phase::Pending, reason));
            let within = waited_out(
                o.clone(),
                since,
                since + chrono::Duration::seconds(299),
                grace,
            );
            assert_eq!(phase_reason(&within), (Phase::Pending, reason));
            assert!(
                within
                    .message
                    .contains("since 2026-01-01T00:00:00Z, failing after 2026-01-01T00:05:00Z")
                    && within.message.ends_with("429 Too Many Requests"),
                "{}",
                within.message
            );
            let after = waited_out(o, since, since + chrono::Duration::seconds(300), grace);
            assert_eq!(phase_reason(&after), (Phase::Failed, reason));
            assert!(
                after.message.contains("IMPORTER_START_GRACE_SECONDS"),
                "{}",
                after.message
            );
        }
        // Anything else passes through.
        let running = Observed::new(Phase::Running, "Running", "x");
        assert_eq!(
            waited_out(
                running.clone(),
                since,
                since + chrono::Duration::hours(9),
                grace
            ),
            running
        );
    }

    #[test]
    fn an_image_that_is_never_pulled_fails_at_once() {
        // pullPolicy Never (kind) and the image not on the node: no retry will find it.
        let job = job_for(&ij()).active(1);
        let pod = pod_for(&ij(), "a", "Pending").state(waiting(
            "ErrImageNeverPull",
            "Container image \"bulk-import:dev\" is not present with pull policy of Never",
        ));
        let o = observe(Some(&job), &[pod]);
        assert_eq!(phase_reason(&o), (Phase::Failed, "ErrImageNeverPull"));
        assert!(o.message.contains("pull policy of Never"), "{}", o.message);
    }

    #[test]
    fn an_unschedulable_pod_shows_while_pending() {
        let job = job_for(&ij()).active(1);
        let mut pod = pod_for(&ij(), "a", "Pending");
        pod.status.get_or_insert_with(Default::default).conditions =
            Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                ..Default::default()
            }]);
        let o = observe(Some(&job), std::slice::from_ref(&pod));
        assert_eq!(phase_reason(&o), (Phase::Pending, "Unschedulable"));
        assert!(o.message.contains("Insufficient memory"), "{}", o.message);
        // Scheduled: no longer the reason.
        pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert_ne!(observe(Some(&job), &[pod]).reason, "Unschedulable");
    }

    #[test]
    fn a_gone_job_is_judged_by_the_row() {
        use bulk_import_core::JobStatus;
        let done = from_row(JobStatus::Done, None).unwrap();
        assert_eq!(phase_reason(&done), (Phase::Complete, "Succeeded"));
        // The importer's own reason.
        let failed = from_row(JobStatus::Failed, Some("header: missing column email")).unwrap();
        assert_eq!(phase_reason(&failed), (Phase::Failed, "ImportFailed"));
        assert_eq!(failed.message, "header: missing column email");
        // One the operator recorded: the same reason again.
        let failed = from_row(JobStatus::Failed, Some("OOMKilled: x")).unwrap();
        assert_eq!(phase_reason(&failed), (Phase::Failed, "OOMKilled"));
        assert_eq!(failed.message, "x");
        assert!(from_row(JobStatus::Processing, None).is_none());
        assert!(from_row(JobStatus::Pending, None).is_none());
    }

    #[test]
    fn between_attempts_it_stays_running() {
        let mut job = job_for(&ij());
        job.status.get_or_insert_with(Default::default).failed = Some(1);
        let killed = pod_for(&ij(), "a", "Failed").state(terminated("Error", 137));
        let o = observe(Some(&job), std::slice::from_ref(&killed));
        assert_eq!(phase_reason(&o), (Phase::Running, "Retrying"));
        let oom = pod_for(&ij(), "a", "Failed").state(terminated("OOMKilled", 137));
        let o = observe(Some(&job), &[oom]);
        assert_eq!(phase_reason(&o), (Phase::Running, "RetryingAfterOOMKilled"));
    }

    #[test]
    fn a_first_image_pull_error_waits_for_the_kubelet_retry() {
        let job = job_for(&ij()).active(1);
        let pod = pod_for(&ij(), "a", "Pending").state(waiting("ErrImagePull", "timeout"));
        assert_ne!(observe(Some(&job), &[pod]).phase, Phase::Failed);
    }

    #[test]
    fn a_retry_after_an_oom_kill_is_running_with_that_reason() {
        let job = job_for(&ij()).active(1);
        let pods = [
            pod_for(&ij(), "a", "Failed").state(terminated("OOMKilled", 137)),
            pod_for(&ij(), "b", "Running").state(running()),
        ];
        let o = observe(Some(&job), &pods);
        assert_eq!(phase_reason(&o), (Phase::Running, "RetryingAfterOOMKilled"));
    }

    fn by_type(conds: &[Condition], type_: &str) -> Condition {
        conds
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_}"))
            .clone()
    }

    #[test]
    fn conditions_say_complete_or_failed() {
        for (phase, complete, failed) in [
            (Phase::Pending, "False", "False"),
            (Phase::Running, "False", "False"),
            (Phase::Complete, "True", "False"),
            (Phase::Failed, "False", "True"),
            (Phase::Invalid, "False", "False"),
        ] {
            let o = Observed::new(phase, "R", "m");
            let conds = conditions(&o, &[], Some(3), NOW);
            assert_eq!(conds.len(), 2);
            assert_eq!(by_type(&conds, "Complete").status, complete, "{phase:?}");
            assert_eq!(by_type(&conds, "Failed").status, failed, "{phase:?}");
            for c in &conds {
                assert_eq!(c.observed_generation, Some(3));
                assert_eq!(c.reason, "R");
                assert_eq!(c.message, "m");
                assert_eq!(c.last_transition_time, NOW);
            }
        }
    }

    #[test]
    fn conditions_keep_their_transition_time_while_their_status_holds() {
        let running = Observed::new(Phase::Running, "Running", "running");
        let before = conditions(&running, &[], Some(1), EARLIER);
        // Still running an hour later: nothing transitioned.
        let again = conditions(&running, &before, Some(1), NOW);
        assert!(
            again.iter().all(|c| c.last_transition_time == EARLIER),
            "{again:?}"
        );

        // Complete: Complete transitions now, Failed (still False) keeps its time.
        let complete = Observed::new(Phase::Complete, "Succeeded", "done");
        let after = conditions(&complete, &before, Some(1), NOW);
        assert_eq!(by_type(&after, "Complete").status, "True");
        assert_eq!(by_type(&after, "Complete").last_transition_time, NOW);
        assert_eq!(by_type(&after, "Failed").last_transition_time, EARLIER);
        assert_eq!(by_type(&after, "Failed").reason, "Succeeded");
    }

    #[test]
    fn phases_parse_back_and_know_when_they_are_final() {
        for p in [
            Phase::Pending,
            Phase::Running,
            Phase::Complete,
            Phase::Failed,
            Phase::Invalid,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(
                p.is_terminal(),
                matches!(p, Phase::Complete | Phase::Failed)
            );
        }
        assert_eq!(Phase::parse("Succeeded"), None);
    }
}
