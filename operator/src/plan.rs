//! What a reconcile of a live ImportJob decides, purely from what it sees: the ImportJob,
//! its Kubernetes Job and that Job's pods (from the controller's caches) and the job row
//! (from Postgres). The controller reads those, calls [`plan`], and carries the plan out
//! (`crate::controller`); every decision is here, and tested as one table of cases.

use crate::{
    job_template::InvalidSpec,
    lifecycle::{next_memory_limit, recheck_after, Limits},
    status::{self, failed_create, from_row, job_finished, observe, Observed, Phase},
};
use bulk_import_core::{crd::ImportJob, job::JobError, JobRow, JobStatus};
use k8s_openapi::api::{batch::v1::Job as KubeJob, core::v1::Pod};
use std::time::Duration;
use uuid::Uuid;

/// How often a running import's progress is mirrored from Postgres (at most): the requeue of
/// a running ImportJob. Not the importer's `PROGRESS_EVERY` (rows between progress messages).
pub const MIRROR_EVERY: Duration = Duration::from_secs(1);
/// When a Pending ImportJob is looked at again (its pod is being scheduled or pulled).
pub const PENDING_RECHECK: Duration = Duration::from_secs(15);

/// What the reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `spec.retries` raised above `status.retries`: run a failed import again.
    Retry(u32),
    /// The ImportJob has finished: stop a Job still running (`stop_job`), then its TTL.
    Finished { stop_job: bool },
    /// The spec cannot become a Job: say why, wait for a change.
    Invalid(String),
    /// `spec.cancelRequested`: cancel the row, then the status, then stop the Job.
    Cancel(Uuid),
    /// No Job, and the import has ended (its Job's TTL passed, `kubectl delete job`): show
    /// the row's outcome, never create the Job again.
    ShowEnded(Observed),
    /// No Job: create it, then mirror it ([`mirror`], `created`).
    Create(Uuid),
    /// Mirror the Job into the status.
    Mirror(Mirror),
}

/// Mirroring a Job: the status to write, and what goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub id: Uuid,
    pub observed: Observed,
    /// A Job with no pod and none active: its pod creation may have been rejected (a
    /// quota, a webhook); look for the Job controller's `FailedCreate` Event and, if there
    /// is one, mirror again with its message ([`mirror`]).
    pub look_for_failed_create: bool,
    /// Record this failure in the row (unless the row has ended) before the status.
    pub record_failure: Option<JobError>,
    /// After the status: stop the Job (a fatal waiting reason, a cancel), when still running.
    pub stop_job: bool,
    /// OOM-killed below the ceiling: before the status, `status.oomRetries` and
    /// `status.memoryLimit` take these; the Job is stopped and the next reconcile creates
    /// `<name>-oom-<n>` with that limit.
    pub grow_memory: Option<(u32, String)>,
    pub then: Then,
}

/// When the ImportJob is reconciled next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Ended: come back for its TTL.
    Finished,
    AwaitChange,
    Requeue(Duration),
}

/// The decision for `ij`, given its id as validated (`job_template::validate`, parsed once),
/// its Job and that Job's pods as cached, and its row (`None` without a database).
pub fn plan(
    ij: &ImportJob,
    id: &Result<Uuid, InvalidSpec>,
    job: Option<&KubeJob>,
    pods: &[Pod],
    row: Option<&JobRow>,
    limits: &Limits,
) -> Plan {
    let status = ij.status.as_ref();
    let retries = ij.spec.retries.unwrap_or(0);
    let cancel = ij.spec.cancel_requested == Some(true);
    if retries > status.and_then(|s| s.retries).unwrap_or(0) && !cancel {
        return Plan::Retry(retries);
    }
    if previous_phase(ij).is_some_and(Phase::is_terminal) {
        // Finished. A Job still running (a fatal failure or a cancel whose status write
        // succeeded but whose Job deletion did not) is stopped; otherwise there is nothing to
        // do (the Job may already be gone after ttlSecondsAfterFinished) but the TTL.
        return Plan::Finished {
            stop_job: job.is_some_and(|j| !job_finished(j)),
        };
    }
    let id = match id {
        Ok(id) => *id,
        Err(InvalidSpec(why)) => return Plan::Invalid(why.clone()),
    };
    if cancel {
        return Plan::Cancel(id);
    }
    match job {
        Some(job) => Plan::Mirror(mirror(ij, id, job, pods, row, Seen::Cached, limits)),
        None => match row.and_then(|r| from_row(r.status(), r.error.as_deref())) {
            Some(ended) => Plan::ShowEnded(ended),
            None => Plan::Create(id),
        },
    }
}

/// How the Job being mirrored was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// In the cache.
    Cached,
    /// Created by this reconcile.
    Created,
    /// In the cache, with no pod because their creation was rejected: the message of the
    /// `FailedCreate` Event.
    FailedCreate(&'a str),
}

/// Mirroring `job`: the observation of the Job and its pods, never going back from Running,
/// overridden by a row cancelled through the API; a failure is recorded and a hopeless Job
/// stopped. The [`Limits`] apply: a pod waiting for its image or Secret past the grace
/// period, too many "try later" exits, an OOM kill (a larger limit, or failed at the
/// ceiling).
pub fn mirror(
    ij: &ImportJob,
    id: Uuid,
    job: &KubeJob,
    pods: &[Pod],
    row: Option<&JobRow>,
    seen: Seen<'_>,
    limits: &Limits,
) -> Mirror {
    let mut observed = observe(Some(job), pods);
    let idle = job.status.as_ref().and_then(|s| s.active).unwrap_or(0) == 0;
    let quiet = observed.phase == Phase::Pending && pods.is_empty() && idle;
    let look_for_failed_create = quiet && seen == Seen::Cached;
    if let (true, Seen::FailedCreate(message)) = (quiet, seen) {
        observed = failed_create(message);
    }
    let since = status::waiting_since(pods);
    if let Some(since) = since {
        observed = status::waited_out(observed, since, limits.now, limits.start_grace);
    }
    observed = tried_later(observed, pods, limits);
    let (oom, grow_memory) = after_oom_kill(ij, job, pods, &observed, limits);
    observed = oom.unwrap_or(observed);
    if previous_phase(ij) == Some(Phase::Running) && observed.phase == Phase::Pending {
        // Its pod went (evicted, deleted) and the next is not there yet: still under way.
        // The phase never goes back.
        observed = Observed {
            phase: Phase::Running,
            reason: "Rescheduling".into(),
            message: format!("waiting for the next importer pod ({})", observed.reason),
        };
    }
    if row.is_some_and(|r| r.status() == JobStatus::Cancelled) {
        // Cancelled in Postgres (the API's cancel route): whatever the Job shows, the import
        // is cancelled, and a Job still running is stopped.
        observed = status::cancelled();
    }
    // Failed while the Job runs on: the operator's own finding (a fatal waiting reason, a
    // grace period over, too many "try later" exits, an OOM kill at the ceiling).
    let fatal = matches!(observed.phase, Phase::Failed | Phase::Cancelled);
    let record_failure = (observed.phase == Phase::Failed).then(|| {
        JobError::new(
            "pod_failed",
            format!("{}: {}", observed.reason, observed.message),
        )
    });
    let then = then(observed.phase, grow_memory.is_some(), since, limits);
    Mirror {
        id,
        observed,
        look_for_failed_create,
        record_failure,
        // It would only sit there until its deadline (or run on, cancelled): stop it now.
        stop_job: (fatal || grow_memory.is_some()) && !job_finished(job),
        grow_memory,
        then,
    }
}

/// When a mirrored ImportJob is reconciled next: a pod waiting out a grace period at its end
/// at the latest; after an OOM kill once the cache holds the new status (then the next Job is
/// created).
fn then(
    phase: Phase,
    grow_memory: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limits: &Limits,
) -> Then {
    match phase {
        Phase::Complete | Phase::Failed | Phase::Cancelled => Then::Finished,
        Phase::Invalid => Then::AwaitChange,
        _ if grow_memory => Then::Requeue(Duration::from_secs(1)),
        Phase::Running => Then::Requeue(MIRROR_EVERY),
        Phase::Pending | Phase::Queued => Then::Requeue(match since {
            Some(since) => recheck_after(limits, since, PENDING_RECHECK),
            None => PENDING_RECHECK,
        }),
    }
}

/// Pods that exited 75 ("try later": the database refused a connection, another run holds
/// the claim) count against no `backoffLimit` (the pod failure policy ignores them) but
/// against `IMPORTER_TRY_LATER_MAX`: past it the import fails. Below it, a Job between
/// pods says how many there were.
fn tried_later(observed: Observed, pods: &[Pod], limits: &Limits) -> Observed {
    let tries = status::tried_later(pods);
    if tries == 0
        || matches!(
            observed.phase,
            Phase::Complete | Phase::Failed | Phase::Cancelled
        )
    {
        return observed;
    }
    if tries >= limits.try_later_max {
        return Observed::new(
            Phase::Failed,
            "TryLaterExhausted",
            format!(
                "the importer asked to try later {tries} times (IMPORTER_TRY_LATER_MAX {}): \
                 the database or storage stayed unreachable, or another run held the job",
                limits.try_later_max
            ),
        );
    }
    if observed.reason == "JobCreated" {
        return Observed::new(
            observed.phase,
            "TryingLater",
            format!(
                "the importer asked to try later {tries} times (of IMPORTER_TRY_LATER_MAX {}); \
                 the Job starts another pod",
                limits.try_later_max
            ),
        );
    }
    observed
}

/// An OOM-killed importer of an unfinished import: run again with twice the memory limit
/// the Job had (idempotent: a reconcile from a stale cache sees the same Job and decides
/// the same), or failed `OOMKilled` at `IMPORTER_MEMORY_LIMIT_MAX`.
fn after_oom_kill(
    ij: &ImportJob,
    job: &KubeJob,
    pods: &[Pod],
    observed: &Observed,
    limits: &Limits,
) -> (Option<Observed>, Option<(u32, String)>) {
    let over = matches!(observed.phase, Phase::Complete | Phase::Cancelled)
        || (observed.phase == Phase::Failed && observed.reason != "OOMKilled");
    if over || !status::oom_killed(pods) {
        return (None, None);
    }
    let current = limits.memory_limit_of(ij, Some(job));
    match next_memory_limit(&current, &limits.memory_limit_max) {
        Some(next) => {
            let n = ij.status.as_ref().and_then(|s| s.oom_retries).unwrap_or(0) + 1;
            let observed = Observed::new(
                Phase::Running,
                "RetryingAfterOOMKilled",
                format!("OOM-killed at {current}, retrying with {next}"),
            );
            (Some(observed), Some((n, next)))
        }
        None => {
            let observed = Observed::new(
                Phase::Failed,
                "OOMKilled",
                format!(
                    "OOM-killed at {current}, the ceiling (IMPORTER_MEMORY_LIMIT_MAX {}): the importer ran out of memory",
                    limits.memory_limit_max
                ),
            );
            (Some(observed), None)
        }
    }
}

/// The phase the status shows now.
pub fn previous_phase(ij: &ImportJob) -> Option<Phase> {
    ij.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .and_then(Phase::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{job_for, pod_for, terminated, waiting, ImportJobExt, JobExt, PodExt},
        job_template::validate,
    };
    use bulk_import_core::ImportMode;

    fn limits() -> Limits {
        Limits::of(&crate::config::OperatorConfig::defaults())
    }

    /// `pod`, started at `at`.
    fn started(mut pod: Pod, at: chrono::DateTime<chrono::Utc>) -> Pod {
        pod.status.get_or_insert_with(Default::default).start_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(at.timestamp()).unwrap(),
            ));
        pod
    }

    fn row(status: JobStatus, error: Option<&str>) -> JobRow {
        let now = chrono::Utc::now();
        JobRow {
            id: Uuid::nil(),
            org_id: 1,
            user_id: Uuid::nil(),
            created_by_email: None,
            idempotency_key: String::new(),
            request_fingerprint: String::new(),
            mode: ImportMode::InsertOnly,
            status,
            source_object: String::new(),
            file_name: String::new(),
            file_size: 0,
            processed_rows: 0,
            inserted_rows: 0,
            updated_rows: 0,
            error_rows: 0,
            checkpoint_offset: 0,
            checkpoint_line: 0,
            report_object: None,
            error_code: None,
            error: error.map(Into::into),
            attempts: 0,
            owner_id: None,
            lease_expires_at: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            dry_run: false,
            max_errors: None,
            delimiter: None,
            encoding: None,
            dialect: None,
            checkpoint_stream_offset: None,
            columns: None,
            queue_position: None,
        }
    }

    /// One row of the table: the case, what the reconcile sees, the plan it comes to.
    type Case<'a> = (
        &'a str,
        &'a ImportJob,
        Option<&'a KubeJob>,
        &'a [Pod],
        Option<&'a JobRow>,
        String,
    );

    /// What a plan comes to, in one line of the table.
    fn summary(plan: &Plan) -> String {
        match plan {
            Plan::Retry(n) => format!("retry {n}"),
            Plan::Finished { stop_job } => format!("finished, stop job {stop_job}"),
            Plan::Invalid(why) => format!("invalid: {why}"),
            Plan::Cancel(_) => "cancel".into(),
            Plan::ShowEnded(o) => format!("show ended {} {}", o.phase.as_str(), o.reason),
            Plan::Create(_) => "create".into(),
            Plan::Mirror(m) => format!(
                "mirror {} {}{}{}{}{} {:?}",
                m.observed.phase.as_str(),
                m.observed.reason,
                if m.look_for_failed_create {
                    ", look for FailedCreate"
                } else {
                    ""
                },
                if m.record_failure.is_some() {
                    ", record failure"
                } else {
                    ""
                },
                if m.stop_job { ", stop job" } else { "" },
                match &m.grow_memory {
                    Some((n, limit)) => format!(", grow memory {n} {limit}"),
                    None => String::new(),
                },
                m.then,
            ),
        }
    }

    #[test]
    fn the_plan_for_each_case() {
        let ij = ImportJob::test();
        let running = ij.clone().with_phase("Running");
        let complete = ij.clone().with_phase("Complete");
        let failed = ij.clone().with_phase("Failed");
        let pending_job = job_for(&ij);
        let active_job = job_for(&ij).active(1);
        let done_job = job_for(&ij).condition("Complete", "", "");
        let failed_job = job_for(&ij).condition("Failed", "DeadlineExceeded", "too long");
        let limits = limits();
        let pulling = [started(
            pod_for(&ij, "a", "Pending").state(waiting("ImagePullBackOff", "no")),
            limits.now - chrono::Duration::seconds(60),
        )];
        let pulled_too_long = [started(
            pulling[0].clone(),
            limits.now - chrono::Duration::hours(1),
        )];
        let no_secret = [started(
            pod_for(&ij, "a", "Pending").state(waiting("CreateContainerConfigError", "no secret")),
            limits.now,
        )];
        let never =
            [pod_for(&ij, "a", "Pending").state(waiting("ErrImageNeverPull", "not on the node"))];
        let oom = [pod_for(&ij, "a", "Failed").state(terminated("OOMKilled", 137))];
        let try_later = |n: usize| -> Vec<Pod> {
            (0..n)
                .map(|i| pod_for(&ij, &i.to_string(), "Failed").state(terminated("Error", 75)))
                .collect()
        };
        let (tried_twice, tried_out) = (try_later(2), try_later(limits.try_later_max));
        let at_ceiling = ij
            .clone()
            .with_status(bulk_import_core::crd::ImportJobStatus {
                memory_limit: Some(limits.memory_limit_max.clone()),
                oom_retries: Some(2),
                ..Default::default()
            });
        let at_ceiling_job = job_for(&at_ceiling).active(1);
        let at_ceiling_oom =
            [pod_for(&at_ceiling, "a", "Failed").state(terminated("OOMKilled", 137))];
        let oom_job_failed = job_for(&ij).condition("Failed", "BackoffLimitExceeded", "x");
        let pod_running = [pod_for(&ij, "a", "Running")];
        let none: [Pod; 0] = [];
        let failed_row = row(JobStatus::Failed, Some("source_missing: gone"));
        let done_row = row(JobStatus::Done, None);
        let cancelled_row = row(JobStatus::Cancelled, None);
        let processing_row = row(JobStatus::Processing, None);
        let retried = ij
            .clone()
            .with_phase("Failed")
            .with_spec(|s| s.retries = Some(1));
        let cancelling = ij.clone().with_spec(|s| s.cancel_requested = Some(true));
        let cancel_and_retry = retried
            .clone()
            .with_spec(|s| s.cancel_requested = Some(true));
        let bad_id = ij.clone().with_spec(|s| s.job_id = "not-a-uuid".into());
        let pending = Then::Requeue(PENDING_RECHECK);
        let mirroring = Then::Requeue(MIRROR_EVERY);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("retries raised", &retried, None, &none, None, "retry 1".into()),
            ("a cancel wins over a retry", &cancel_and_retry, None, &none, None,
                "finished, stop job false".into()),
            ("finished, its Job done", &complete, Some(&done_job), &none, None,
                "finished, stop job false".into()),
            ("finished, its Job still running", &failed, Some(&active_job), &none, None,
                "finished, stop job true".into()),
            ("invalid spec", &bad_id, None, &none, None,
                "invalid: jobId \"not-a-uuid\" is not a UUID".into()),
            ("cancel requested", &cancelling, Some(&active_job), &none, None, "cancel".into()),
            ("no Job yet", &ij, None, &none, None, "create".into()),
            ("no Job yet, row still running", &ij, None, &none, Some(&processing_row), "create".into()),
            ("no Job, the import is done", &ij, None, &none, Some(&done_row),
                "show ended Complete Succeeded".into()),
            ("no Job, the import failed", &ij, None, &none, Some(&failed_row),
                "show ended Failed ImportFailed".into()),
            ("a Job, no pod yet", &ij, Some(&pending_job), &none, None,
                format!("mirror Pending JobCreated, look for FailedCreate {pending:?}")),
            ("a Job with a running pod", &ij, Some(&active_job), &pod_running, Some(&processing_row),
                format!("mirror Running Running {mirroring:?}")),
            ("a running import's pod is gone", &running, Some(&pending_job), &none, None,
                format!("mirror Running Rescheduling, look for FailedCreate {mirroring:?}")),
            ("a Job done", &running, Some(&done_job), &none, Some(&done_row),
                format!("mirror Complete Succeeded {:?}", Then::Finished)),
            ("a Job past its deadline", &running, Some(&failed_job), &none, None,
                format!("mirror Failed DeadlineExceeded, record failure {:?}", Then::Finished)),
            ("an image pull backing off, within the grace period", &ij, Some(&active_job), &pulling, None,
                format!("mirror Pending ImagePullBackOff {:?}", Then::Requeue(PENDING_RECHECK))),
            ("an image pull backing off past the grace period", &ij, Some(&active_job), &pulled_too_long, None,
                format!("mirror Failed ImagePullBackOff, record failure, stop job {:?}", Then::Finished)),
            ("a Secret not there yet", &ij, Some(&active_job), &no_secret, None,
                format!("mirror Pending CreateContainerConfigError {:?}", Then::Requeue(PENDING_RECHECK))),
            ("an image never pulled", &ij, Some(&active_job), &never, None,
                format!("mirror Failed ErrImageNeverPull, record failure, stop job {:?}", Then::Finished)),
            ("OOM-killed: a larger limit", &running, Some(&active_job), &oom, None,
                format!("mirror Running RetryingAfterOOMKilled, stop job, grow memory 1 512Mi {:?}", Then::Requeue(Duration::from_secs(1)))),
            ("OOM-killed, the Job failed: a larger limit", &running, Some(&oom_job_failed), &oom, None,
                format!("mirror Running RetryingAfterOOMKilled, grow memory 1 512Mi {:?}", Then::Requeue(Duration::from_secs(1)))),
            ("OOM-killed at the ceiling", &at_ceiling, Some(&at_ceiling_job), &at_ceiling_oom, None,
                format!("mirror Failed OOMKilled, record failure, stop job {:?}", Then::Finished)),
            ("tried later twice", &ij, Some(&pending_job), &tried_twice, None,
                format!("mirror Pending TryingLater {pending:?}")),
            ("tried later too often", &ij, Some(&pending_job), &tried_out, None,
                format!("mirror Failed TryLaterExhausted, record failure, stop job {:?}", Then::Finished)),
            ("a row cancelled through the API", &running, Some(&active_job), &pod_running, Some(&cancelled_row),
                format!("mirror Cancelled Cancelled, stop job {:?}", Then::Finished)),
            ("a row cancelled, the Job done", &running, Some(&done_job), &none, Some(&cancelled_row),
                format!("mirror Cancelled Cancelled {:?}", Then::Finished)),
        ];
        for (case, ij, job, pods, row, want) in cases {
            let got = plan(ij, &validate(ij), job, pods, row, &limits);
            assert_eq!(summary(&got), want, "{case}");
        }
    }

    #[test]
    fn a_failed_create_event_shows_while_the_job_has_no_pod() {
        let ij = ImportJob::test();
        let job = job_for(&ij);
        let id = validate(&ij).unwrap();
        let m = mirror(
            &ij,
            id,
            &job,
            &[],
            None,
            Seen::FailedCreate("quota exceeded"),
            &limits(),
        );
        assert_eq!(
            (m.observed.reason.as_str(), m.observed.message.as_str()),
            ("FailedCreate", "quota exceeded")
        );
        assert!(!m.look_for_failed_create);
        let created = mirror(&ij, id, &job, &[], None, Seen::Created, &limits());
        assert_eq!(created.observed.reason, "JobCreated");
        assert!(
            !created.look_for_failed_create,
            "a Job just created has had no time"
        );
    }
}
