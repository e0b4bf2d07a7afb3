//! What a reconcile of a live ImportJob decides, purely from what it sees: the ImportJob,
//! its Kubernetes Job and that Job's pods (from the controller's caches) and the job row
//! (from Postgres). The controller reads those, calls [`plan`], and carries the plan out
//! (`crate::controller`); every decision is here, and tested as one table of cases.

use crate::{
    job_template::InvalidSpec,
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
        Some(job) => Plan::Mirror(mirror(ij, id, job, pods, row, Seen::Cached)),
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
/// stopped.
pub fn mirror(
    ij: &ImportJob,
    id: Uuid,
    job: &KubeJob,
    pods: &[Pod],
    row: Option<&JobRow>,
    seen: Seen<'_>,
) -> Mirror {
    let mut observed = observe(Some(job), pods);
    let idle = job.status.as_ref().and_then(|s| s.active).unwrap_or(0) == 0;
    let quiet = observed.phase == Phase::Pending && pods.is_empty() && idle;
    let look_for_failed_create = quiet && seen == Seen::Cached;
    if let (true, Seen::FailedCreate(message)) = (quiet, seen) {
        observed = failed_create(message);
    }
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
    let fatal = (observed.phase == Phase::Failed
        && status::FATAL_WAITING.contains(&observed.reason.as_str()))
        || observed.phase == Phase::Cancelled;
    let record_failure = (observed.phase == Phase::Failed).then(|| {
        JobError::new(
            "pod_failed",
            format!("{}: {}", observed.reason, observed.message),
        )
    });
    let then = match observed.phase {
        Phase::Complete | Phase::Failed | Phase::Cancelled => Then::Finished,
        Phase::Invalid => Then::AwaitChange,
        Phase::Running => Then::Requeue(MIRROR_EVERY),
        Phase::Pending | Phase::Queued => Then::Requeue(PENDING_RECHECK),
    };
    Mirror {
        id,
        observed,
        look_for_failed_create,
        record_failure,
        // It would only sit there until its deadline (or run on, cancelled): stop it now.
        stop_job: fatal && !job_finished(job),
        then,
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
        fixtures::{job_for, pod_for, waiting, ImportJobExt, JobExt, PodExt},
        job_template::validate,
    };
    use bulk_import_core::ImportMode;

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
                "mirror {} {}{}{}{} {:?}",
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
                m.then,
            ),
        }
    }

    #[test]
    fn the_plan_for_each_case() {
        let ij = ImportJob::test().finalized();
        let running = ij.clone().with_phase("Running");
        let complete = ij.clone().with_phase("Complete");
        let failed = ij.clone().with_phase("Failed");
        let pending_job = job_for(&ij);
        let active_job = job_for(&ij).active(1);
        let done_job = job_for(&ij).condition("Complete", "", "");
        let failed_job = job_for(&ij).condition("Failed", "DeadlineExceeded", "too long");
        let pulling = [pod_for(&ij, "a", "Pending").state(waiting("ImagePullBackOff", "no"))];
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
            ("an image that cannot be pulled", &ij, Some(&active_job), &pulling, None,
                format!("mirror Failed ImagePullBackOff, record failure, stop job {:?}", Then::Finished)),
            ("a row cancelled through the API", &running, Some(&active_job), &pod_running, Some(&cancelled_row),
                format!("mirror Cancelled Cancelled, stop job {:?}", Then::Finished)),
            ("a row cancelled, the Job done", &running, Some(&done_job), &none, Some(&cancelled_row),
                format!("mirror Cancelled Cancelled {:?}", Then::Finished)),
        ];
        for (case, ij, job, pods, row, want) in cases {
            let got = plan(ij, &validate(ij), job, pods, row);
            assert_eq!(summary(&got), want, "{case}");
        }
    }

    #[test]
    fn a_failed_create_event_shows_while_the_job_has_no_pod() {
        let ij = ImportJob::test().finalized();
        let job = job_for(&ij);
        let id = validate(&ij).unwrap();
        let m = mirror(
            &ij,
            id,
            &job,
            &[],
            None,
            Seen::FailedCreate("quota exceeded"),
        );
        assert_eq!(
            (m.observed.reason.as_str(), m.observed.message.as_str()),
            ("FailedCreate", "quota exceeded")
        );
        assert!(!m.look_for_failed_create);
        let created = mirror(&ij, id, &job, &[], None, Seen::Created);
        assert_eq!(created.observed.reason, "JobCreated");
        assert!(
            !created.look_for_failed_create,
            "a Job just created has had no time"
        );
    }
}
