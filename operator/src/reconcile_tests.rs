//! Reconcile scenarios against a mocked Kubernetes API: each request reconcile makes is
//! checked in order (method, path, query, body) and answered; a missing or extra request
//! fails the test. Database effects are checked in a real per-test Postgres database.
//! What these prove is the operator's side of the conversation, not a cluster's behaviour.

use crate::{
    config::OperatorConfig, controller::error_policy, fixtures::*, job_template::build_job, Error,
};
use bulk_import_core::{
    crd::{Condition, ImportJob, ImportJobStatus, JOB_ID_LABEL},
    db, testing, Settings, Storage,
};
use kube::{runtime::controller::Action, ResourceExt};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};

const EARLIER: &str = "2026-01-01T00:00:00Z";

fn requeue(secs: u64) -> Action {
    Action::requeue(Duration::from_secs(secs))
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"))
        .clone()
}

/// The status as an earlier reconcile left it: Running since `EARLIER`, both conditions False.
fn running_status() -> ImportJobStatus {
    let cond = |type_: &str| Condition {
        type_: type_.into(),
        status: "False".into(),
        reason: "Running".into(),
        message: "the importer is running".into(),
        last_transition_time: EARLIER.into(),
        observed_generation: Some(1),
    };
    ImportJobStatus {
        phase: Some("Running".into()),
        reason: Some("Running".into()),
        message: Some("the importer is running".into()),
        job_name: Some(name()),
        observed_generation: Some(1),
        started_at: Some(EARLIER.into()),
        processed_rows: Some(500),
        conditions: Some(vec![cond("Complete"), cond("Failed")]),
        ..Default::default()
    }
}

/// The status body of the n-th request (a status apply), as the next reconcile would read it.
fn applied_status(seen: &[Seen], n: usize) -> ImportJobStatus {
    assert!(seen[n].path.ends_with("/status"), "{:?}", seen[n]);
    serde_json::from_value(seen[n].body["status"].clone()).expect("a valid status")
}

/// A pool on a database of the test's own, dropped with it.
async fn database() -> TestPool {
    let database = testing::create_database().await;
    let pool = db::connect(database.url(), 2)
        .await
        .expect("connect to the test database");
    TestPool {
        pool,
        _database: database,
    }
}

struct TestPool {
    pool: PgPool,
    _database: testing::TestDatabase,
}

impl std::ops::Deref for TestPool {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

async fn insert_job_row(pool: &PgPool, status: &str) {
    let (user, org) = bulk_import_core::accounts::service_account(
        pool,
        &format!("{}@example.com", uuid::Uuid::new_v4()),
    )
    .await
    .expect("insert user");
    sqlx::query(
        "INSERT INTO import_jobs (id, user_id, org_id, idempotency_key, request_fingerprint, mode, status, \
         source_object, file_name, file_size) \
         VALUES ($1, $2, $5, 'key-1', 'fp', 'insert_only', $3, $4, 'customers.csv', 1024)",
    )
    .bind(JOB_ID.parse::<uuid::Uuid>().unwrap())
    .bind(user)
    .bind(status)
    .bind(format!("uploads/{JOB_ID}.csv"))
    .bind(org)
    .execute(pool)
    .await
    .expect("insert import job");
}

/// (status, error, finished_at is set) of the test import's row.
async fn job_row(pool: &PgPool) -> (String, Option<String>, bool) {
    sqlx::query_as("SELECT status, error, finished_at IS NOT NULL FROM import_jobs WHERE id = $1")
        .bind(JOB_ID.parse::<uuid::Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .expect("the import job row")
}

fn fs_storage(dir: &TempDir) -> Storage {
    let dir = dir.path().join("storage").display().to_string();
    let settings = Settings::from_lookup(&|k| match k {
        "STORAGE" => Some("fs".into()),
        "STORAGE_DIR" => Some(dir.clone()),
        "STORAGE_KEY_PREFIX" => Some("test-operator/".into()),
        _ => None,
    })
    .expect("storage settings");
    Storage::from_settings(&settings).expect("fs storage")
}

async fn put(storage: &Storage, key: &str) {
    storage
        .put_stream(key, &b"email,first_name\n"[..])
        .await
        .expect("put an object");
}

#[tokio::test]
async fn a_new_importjob_gets_exactly_one_job_and_a_pending_status_and_no_finalizer() {
    let new = ImportJob::test();
    let mut h = Harness::new();
    // No finalizer patch: the first reconcile creates the Job.
    let ij = new;
    let desired =
        serde_json::to_value(build_job(&ij, &OperatorConfig::defaults()).unwrap()).unwrap();
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                Expect::post(jobs_path())
                    .body(move |job| {
                        assert_eq!(job, &desired, "the Job posted is the one build_job builds");
                        assert_eq!(job["metadata"]["name"], name());
                        assert_eq!(job["metadata"]["namespace"], NS);
                        assert_eq!(job["metadata"]["labels"][JOB_ID_LABEL], JOB_ID);
                        let owner = &job["metadata"]["ownerReferences"][0];
                        assert_eq!(owner["kind"], "ImportJob");
                        assert_eq!(owner["uid"], UID);
                        assert_eq!(owner["controller"], true);
                        let pod = &job["spec"]["template"]["spec"];
                        assert_eq!(pod["containers"][0]["image"], "bulk-import:dev");
                        assert_eq!(pod["containers"][0]["args"], json!(["--job-id", JOB_ID]));
                    })
                    .echo(201),
                expect_event("JobCreated", "Normal"),
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Pending", "{s:#}");
                    assert_eq!(s["reason"], "JobCreated", "{s:#}");
                    assert_eq!(s["jobName"], name(), "{s:#}");
                    assert_eq!(s["observedGeneration"], 1, "{s:#}");
                    assert_eq!(s["startedAt"], Value::Null, "{s:#}");
                    assert_eq!(s["finishedAt"], Value::Null, "{s:#}");
                    assert_eq!(condition(s, "Complete")["status"], "False");
                    assert_eq!(condition(s, "Failed")["status"], "False");
                    assert_eq!(condition(s, "Complete")["observedGeneration"], 1);
                }),
                expect_event("Pending", "Normal"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(15));
    let posts = seen
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path == jobs_path())
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn an_existing_job_is_read_never_created_again_and_an_unchanged_status_not_rewritten() {
    let ij = ImportJob::test().with_phase("Pending");
    let job = job_for(&ij).active(1);
    let pods = vec![pod_for(&ij, "a1b2c", "Running").state(running())];
    let mut h = Harness::new();
    // Read from the controller's caches: no GET of the Job, no LIST of pods.
    h.cache(Some(&job), &pods);
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Running", "{s:#}");
                    assert_eq!(s["reason"], "Running", "{s:#}");
                    assert!(s["startedAt"].is_string(), "startedAt is set: {s:#}");
                    assert_eq!(s["finishedAt"], Value::Null, "{s:#}");
                }),
                expect_event("Running", "Normal"),
            ],
        )
        .await;
    // Running: progress is mirrored from Postgres once a second.
    assert_eq!(action.unwrap(), requeue(1));

    // The next reconcile sees the status it wrote: nothing to create, nothing to write.
    let ij = ij.with_status(applied_status(&seen, 0));
    let (action, _) = h.reconcile(&ij, vec![]).await;
    assert_eq!(action.unwrap(), requeue(1));
}

#[tokio::test]
async fn a_lost_create_race_reads_the_job_that_won() {
    let ij = ImportJob::test();
    let mut h = Harness::new();
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                // Not in the cache yet: created meanwhile by another reconcile or leader. No
                // GET: the Job watch brings it, and the next reconcile reads it there.
                Expect::post(jobs_path()).fail(409, "AlreadyExists"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(1));
    h.cache(Some(&job_for(&ij)), &[]);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                // No pod yet: is a FailedCreate Event why?
                expect_failed_create_events(&ij, &[]),
                expect_status_apply(&ij, |s| assert_eq!(s["phase"], "Pending", "{s:#}")),
                expect_event("Pending", "Normal"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(15));
}

#[tokio::test]
async fn a_succeeded_job_completes_the_importjob_with_condition_complete_true() {
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).condition(
        "Complete",
        "CompletionsReached",
        "Reached expected number of succeeded pods",
    );
    let pod = pod_for(&ij, "a1b2c", "Succeeded").state(terminated("Completed", 0));
    let mut h = Harness::new();
    h.cache(Some(&job), &[pod]);
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Complete", "{s:#}");
                    assert_eq!(s["reason"], "Succeeded", "{s:#}");
                    let complete = condition(s, "Complete");
                    assert_eq!(complete["status"], "True", "{s:#}");
                    assert_eq!(complete["reason"], "Succeeded");
                    assert_ne!(complete["lastTransitionTime"], EARLIER, "Complete changed");
                    let failed = condition(s, "Failed");
                    assert_eq!(failed["status"], "False");
                    assert_eq!(
                        failed["lastTransitionTime"], EARLIER,
                        "Failed did not change"
                    );
                    assert_eq!(s["startedAt"], EARLIER, "startedAt is kept");
                    assert!(s["finishedAt"].is_string(), "finishedAt is set: {s:#}");
                    // No database here: the counters last shown are kept.
                    assert_eq!(s["processedRows"], 500, "{s:#}");
                }),
                expect_event("Complete", "Normal"),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        requeue(604800),
        "back when the ImportJob's TTL is up"
    );

    // Finished: later reconciles touch nothing (the Job may be gone after its TTL); they
    // come back when the ImportJob's own TTL is up.
    let ij = ij.with_status(applied_status(&seen, 0));
    let (action, _) = h.reconcile(&ij, vec![]).await;
    assert_ne!(action.unwrap(), Action::await_change());
    // Counted once as finished, and every reconcile timed.
    let finished = |phase: &str, reason: &str| {
        h.ctx
            .metrics
            .imports_finished
            .with_label_values(&[phase, reason])
            .get()
    };
    assert_eq!(finished("Complete", "Succeeded"), 1);
    assert_eq!(finished("Failed", "Succeeded"), 0);
    assert_eq!(h.ctx.metrics.reconcile_duration.get_sample_count(), 2);
}

#[tokio::test]
async fn an_oom_killed_importer_runs_again_with_twice_the_memory() {
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).condition(
        "Failed",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    let pods = vec![pod_for(&ij, "aaaaa", "Failed").state(terminated("OOMKilled", 137))];
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &pods);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_event("OOMKilled", "Warning"),
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Running", "{s:#}");
                    assert_eq!(s["reason"], "RetryingAfterOOMKilled", "{s:#}");
                    assert_eq!(s["message"], "OOM-killed at 256Mi, retrying with 512Mi");
                    assert_eq!(s["memoryLimit"], "512Mi", "{s:#}");
                    assert_eq!(s["oomRetries"], 1, "{s:#}");
                    assert_eq!(s["jobName"], format!("{}-oom-1", name()), "{s:#}");
                }),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(1), "back to create the next Job");
    let (status, _, _) = job_row(&pool).await;
    assert_eq!(status, "processing", "no failure recorded");
}

#[tokio::test]
async fn an_oom_killed_importer_at_the_ceiling_fails_the_importjob_and_its_postgres_row() {
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).condition(
        "Failed",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    let pods = vec![
        pod_for(&ij, "aaaaa", "Failed").state(terminated("OOMKilled", 137)),
        pod_for(&ij, "bbbbb", "Failed").state(terminated("OOMKilled", 137)),
    ];
    let config = OperatorConfig {
        memory_limit_max: "256Mi".into(),
        ..OperatorConfig::defaults()
    };
    let mut h = Harness::with(config, Some(pool.clone()), None);
    h.cache(Some(&job), &pods);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Failed", "{s:#}");
                    assert_eq!(s["reason"], "OOMKilled", "{s:#}");
                    assert!(
                        s["message"]
                            .as_str()
                            .unwrap()
                            .starts_with("OOM-killed at 256Mi, the ceiling"),
                        "{s:#}"
                    );
                    assert_eq!(condition(s, "Failed")["status"], "True");
                    assert_eq!(condition(s, "Failed")["reason"], "OOMKilled");
                    assert_eq!(condition(s, "Complete")["status"], "False");
                    assert!(s["finishedAt"].is_string(), "{s:#}");
                }),
                expect_event("Failed", "Warning"),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        requeue(604800),
        "back when the ImportJob's TTL is up"
    );
    let (status, error, finished) = job_row(&pool).await;
    assert_eq!(status, "failed");
    let error = error.expect("the failure reason is recorded");
    assert!(error.starts_with("pod_failed: OOMKilled: "), "{error}");
    assert!(finished);
}

#[tokio::test]
async fn a_failure_the_importer_recorded_itself_is_not_overwritten() {
    let pool = database().await;
    insert_job_row(&pool, "failed").await;
    sqlx::query("UPDATE import_jobs SET error = 'header: missing column email'")
        .execute(&*pool)
        .await
        .unwrap();
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).condition(
        "Failed",
        "PodFailurePolicy",
        "Container importer exited with 2",
    );
    let pod = pod_for(&ij, "aaaaa", "Failed").state(terminated("Error", 2));
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &[pod]);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Failed", "{s:#}");
                    assert_eq!(s["reason"], "ImporterFailed", "{s:#}");
                }),
                expect_event("Failed", "Warning"),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        requeue(604800),
        "back when the ImportJob's TTL is up"
    );
    let (status, error, _) = job_row(&pool).await;
    assert_eq!(status, "failed");
    assert_eq!(error.as_deref(), Some("header: missing column email"));
}

#[tokio::test]
async fn image_pull_backoff_past_its_grace_period_fails_the_importjob_and_deletes_the_job() {
    // The importer never ran: only the operator can record this failure.
    let pool = database().await;
    insert_job_row(&pool, "pending").await;
    let ij = ImportJob::test().with_phase("Pending");
    let job = job_for(&ij).active(1);
    let pod = pod_for(&ij, "a1b2c", "Pending").state(waiting(
        "ImagePullBackOff",
        "Back-off pulling image \"bulk-import:dev\"",
    ));
    let mut pod = pod;
    pod.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    // No grace period: the pull back-off fails the import at once.
    let config = OperatorConfig {
        start_grace: Duration::ZERO,
        ..OperatorConfig::defaults()
    };
    let mut h = Harness::with(config, Some(pool.clone()), None);
    h.cache(Some(&job), &[pod]);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                // The status first, then the Job is stopped.
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Failed", "{s:#}");
                    assert_eq!(s["reason"], "ImagePullBackOff", "{s:#}");
                    assert!(
                        s["message"].as_str().unwrap().contains("Back-off pulling"),
                        "{s:#}"
                    );
                    assert_eq!(condition(s, "Failed")["status"], "True");
                }),
                expect_event("Failed", "Warning"),
                expect_delete_job(&ij, true),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        requeue(604800),
        "back when the ImportJob's TTL is up"
    );
    let (status, error, _) = job_row(&pool).await;
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.starts_with("pod_failed: ImagePullBackOff: waited for the image pull since")
            && error.ends_with("Back-off pulling image \"bulk-import:dev\""),
        "{error}"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_once_and_waits_for_a_change() {
    let ij = ImportJob::test().with_spec(|s| s.job_id = "not-a-uuid".into());
    let mut h = Harness::new();
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                // No GET or POST of a Job: the status says why, and that is all.
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Invalid", "{s:#}");
                    assert_eq!(s["reason"], "InvalidSpec", "{s:#}");
                    assert!(
                        s["message"].as_str().unwrap().contains("not a UUID"),
                        "{s:#}"
                    );
                    assert_eq!(s["jobName"], Value::Null, "{s:#}");
                    assert_eq!(condition(s, "Complete")["status"], "False");
                    assert_eq!(condition(s, "Failed")["status"], "False");
                    assert_eq!(condition(s, "Failed")["reason"], "InvalidSpec");
                }),
                expect_event("Invalid", "Warning"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), Action::await_change());

    // Reconciled again (a resync, a restart): no request at all, no retry.
    let ij = ij.with_status(applied_status(&seen, 0));
    let (action, _) = h.reconcile(&ij, vec![]).await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn api_errors_are_returned_so_that_error_policy_retries() {
    let ij = ImportJob::test();
    let mut h = Harness::new();
    let (result, _) = h
        .reconcile(
            &ij,
            vec![Expect::post(jobs_path()).fail(500, "InternalError")],
        )
        .await;
    match result {
        Err(Error::Kube(kube::Error::Api(s))) => assert_eq!(s.code, 500),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn error_policy_backs_off_exponentially_per_importjob_and_resets_on_success() {
    let mut h = Harness::new();
    let ij = Arc::new(ImportJob::test().with_phase("Complete"));
    let err = Error::Storage("unavailable".into());
    let delays: Vec<Action> = (0..11)
        .map(|_| error_policy(ij.clone(), &err, h.ctx.clone()))
        .collect();
    let expected: Vec<Action> = [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        .into_iter()
        .map(requeue)
        .collect();
    assert_eq!(delays, expected);

    // Another ImportJob has its own count.
    let mut other = (*ij).clone();
    other.metadata.name = Some("import-other".into());
    assert_eq!(
        error_policy(Arc::new(other), &err, h.ctx.clone()),
        requeue(2)
    );

    // A successful reconcile (a finished ImportJob: no request) resets the count.
    let (action, _) = h.reconcile(&ij, vec![]).await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert_eq!(error_policy(ij, &err, h.ctx.clone()), requeue(2));
    assert_eq!(h.ctx.metrics.failures.get(), 13);
}

/// Bug 1 (issue 11): the Failed status write fails (a 503) after a fatal pull failure. The
/// Job must not be gone already, or the retry finds nothing to act on and the ImportJob
/// stays Pending for good while Postgres says failed: the status comes first, the Job is
/// deleted after, and a retry decides again.
#[tokio::test]
async fn a_failed_status_write_after_a_fatal_pull_failure_is_retried_with_the_job_still_there() {
    let pool = database().await;
    insert_job_row(&pool, "pending").await;
    let ij = ImportJob::test().with_phase("Pending");
    let job = job_for(&ij).active(1);
    let pod = pod_for(&ij, "a1b2c", "Pending").state(waiting(
        "ErrImageNeverPull",
        "Container image \"bulk-import:dev\" is not present with pull policy of Never",
    ));
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), std::slice::from_ref(&pod));
    let (result, _) = h
        .reconcile(
            &ij,
            vec![Expect::patch(format!("{}/status", importjob_path(&name())))
                .query("fieldManager", "bulk-import-operator")
                .query("force", "true")
                .fail(503, "ServiceUnavailable")],
        )
        .await;
    assert!(
        result.is_err(),
        "the failed write is retried by error_policy"
    );
    assert_eq!(job_row(&pool).await.0, "failed", "Postgres knows already");

    // The retry: the Job is still there, the same decision is made and written.
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Failed", "{s:#}");
                    assert_eq!(s["reason"], "ErrImageNeverPull", "{s:#}");
                }),
                expect_event("Failed", "Warning"),
                expect_delete_job(&ij, true),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        requeue(604800),
        "back when the ImportJob's TTL is up"
    );

    // Had the delete failed after the status was written, the next reconcile (Failed, the
    // Job still active in the cache) deletes it.
    let failed = ij.clone().with_status(applied_status(&seen, 0));
    let (action, _) = h
        .reconcile(&failed, vec![expect_delete_job(&failed, true)])
        .await;
    assert_ne!(action.unwrap(), Action::await_change(), "the TTL's requeue");
    // And once it is gone, nothing more.
    h.cache(None, &[]);
    let (action, _) = h.reconcile(&failed, vec![]).await;
    assert_ne!(action.unwrap(), Action::await_change(), "the TTL's requeue");

    // The other order of events: the Job is gone (deleted by an older operator) and the
    // status still says Pending: the row's outcome is written, no Job is created again.
    // (Another operator process: its Event is new, not a repeat of this one's.)
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Failed", "{s:#}");
                    assert_eq!(s["reason"], "ErrImageNeverPull", "{s:#}");
                }),
                expect_event("Failed", "Warning"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(604800));
}

/// Bug 2 (issue 11): the Job is gone (its TTL passed while the operator was down, or
/// `kubectl delete job`) and the row has ended. No new Job is created — it would re-run the
/// import — and the status takes the row's outcome: Failed for a failed import.
#[tokio::test]
async fn a_missing_job_of_an_ended_import_is_not_created_again() {
    for (row_status, phase, reason) in [
        ("failed", "Failed", "OOMKilled"),
        ("done", "Complete", "Succeeded"),
    ] {
        let pool = database().await;
        insert_job_row(&pool, row_status).await;
        sqlx::query(
            "UPDATE import_jobs SET error = CASE WHEN status = 'failed' THEN 'OOMKilled: x' END, \
             processed_rows = 10, inserted_rows = 9, error_rows = 1",
        )
        .execute(&*pool)
        .await
        .unwrap();
        let ij = ImportJob::test().with_status(running_status());
        let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
        let (action, _) = h
            .reconcile(
                &ij,
                vec![
                    // No POST of a Job.
                    expect_status_apply(&ij, move |s| {
                        assert_eq!(s["phase"], phase, "{s:#}");
                        assert_eq!(s["reason"], reason, "{s:#}");
                        assert_eq!(condition(s, phase)["status"], "True", "{s:#}");
                        assert_eq!(s["processedRows"], 10, "{s:#}");
                        assert_eq!(s["errorRows"], 1, "{s:#}");
                        if phase == "Failed" {
                            assert_eq!(s["message"], "x", "{s:#}");
                        }
                    }),
                    expect_event(
                        phase,
                        if phase == "Failed" {
                            "Warning"
                        } else {
                            "Normal"
                        },
                    ),
                ],
            )
            .await;
        assert_eq!(action.unwrap(), requeue(604800), "{row_status}");
        assert_eq!(job_row(&pool).await.0, row_status, "the row is left alone");
    }
}

/// The importer has no Kubernetes credentials: the operator mirrors the row's counters into
/// the status while the import runs — once a second at most, and only when they changed.
#[tokio::test]
async fn progress_is_mirrored_from_postgres_only_when_it_changes() {
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let set = |processed: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "UPDATE import_jobs SET processed_rows = $1, inserted_rows = $1 - $1 / 10, \
                 error_rows = $1 / 10, checkpoint_offset = $1",
            )
            .bind(processed)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set(300).await;
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).active(1);
    let pods = vec![pod_for(&ij, "a1b2c", "Running").state(running())];
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &pods);
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![expect_status_apply(&ij, |s| {
                assert_eq!(s["phase"], "Running", "{s:#}");
                assert_eq!(s["processedRows"], 300, "{s:#}");
                assert_eq!(s["insertedRows"], 270, "{s:#}");
                assert_eq!(s["updatedRows"], 0, "{s:#}");
                assert_eq!(s["errorRows"], 30, "{s:#}");
                // 300 of 1024 bytes.
                assert_eq!(s["progressPercent"], 29.3, "{s:#}");
                assert_eq!(s["startedAt"], EARLIER, "{s:#}");
            })],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(1));
    // Nothing changed in a second: no request.
    let ij = ij.with_status(applied_status(&seen, 0));
    let (action, _) = h.reconcile(&ij, vec![]).await;
    assert_eq!(action.unwrap(), requeue(1));
    // A batch later: one apply with the new counters.
    set(600).await;
    let (action, _) = h
        .reconcile(
            &ij,
            vec![expect_status_apply(&ij, |s| {
                assert_eq!(s["processedRows"], 600, "{s:#}")
            })],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(1));
}

/// Bug 4 (issue 11): a Job whose pods a ResourceQuota rejects has no pod at all; the Job
/// controller says why in a `FailedCreate` Event, and the status shows it while pending.
#[tokio::test]
async fn a_pod_creation_rejected_by_a_quota_shows_in_the_status() {
    let ij = ImportJob::test().with_phase("Pending");
    let job = job_for(&ij);
    let mut h = Harness::new();
    h.cache(Some(&job), &[]);
    let quota = "pods \"import-x-abcde\" is forbidden: exceeded quota: compute, requested: \
                 limits.memory=256Mi, used: limits.memory=1Gi, limited: limits.memory=1Gi";
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_failed_create_events(&ij, &["an older one", quota]),
                expect_status_apply(&ij, move |s| {
                    assert_eq!(s["phase"], "Pending", "{s:#}");
                    assert_eq!(s["reason"], "FailedCreate", "{s:#}");
                    assert_eq!(s["message"], quota, "the latest Event: {s:#}");
                    assert_eq!(condition(s, "Failed")["status"], "False", "{s:#}");
                }),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(15));
}

/// Issue 12: `spec.cancelRequested` cancels a running import — the row first (the importer's
/// next batch commit is refused), then the status (`Cancelled`, with its condition), then
/// the Job is deleted (its pod stops at a batch boundary).
#[tokio::test]
async fn a_cancel_request_cancels_the_row_then_the_status_then_stops_the_job() {
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let ij = ImportJob::test()
        .with_status(running_status())
        .with_spec(|s| s.cancel_requested = Some(true));
    let job = job_for(&ij).active(1);
    let pods = vec![pod_for(&ij, "a1b2c", "Running").state(running())];
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &pods);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Cancelled", "{s:#}");
                    assert_eq!(s["reason"], "Cancelled", "{s:#}");
                    assert_eq!(condition(s, "Cancelled")["status"], "True", "{s:#}");
                    assert_eq!(condition(s, "Failed")["status"], "False", "{s:#}");
                    assert!(s["finishedAt"].is_string(), "{s:#}");
                }),
                expect_event("Cancelled", "Normal"),
                expect_delete_job(&ij, true),
            ],
        )
        .await;
    // Back when the ImportJob's TTL (7 days by default) is up.
    assert_eq!(action.unwrap(), requeue(604800));
    assert_eq!(job_row(&pool).await.0, "cancelled");

    // Too late: an import that ended first keeps its outcome.
    let pool = database().await;
    insert_job_row(&pool, "done").await;
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(None, &[]);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| assert_eq!(s["phase"], "Complete", "{s:#}")),
                expect_event("Complete", "Normal"),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(604800));
    assert_eq!(job_row(&pool).await.0, "done");
}

/// Issue 12: a finished ImportJob is deleted `IMPORTJOB_TTL_SECONDS_AFTER_FINISHED` after it
/// ended (its finalizer then cleans up as for any deletion); 0 keeps it.
#[tokio::test]
async fn finished_importjobs_are_deleted_after_their_ttl() {
    let mut old = ImportJob::test().with_status(running_status());
    let st = old.status.as_mut().unwrap();
    st.phase = Some("Complete".into());
    st.finished_at = Some(EARLIER.into());
    let mut h = Harness::new();
    let (action, _) = h
        .reconcile(
            &old,
            vec![Expect::delete(importjob_path(&name())).reply(200, old.clone().deleting())],
        )
        .await;
    assert_eq!(action.unwrap(), Action::await_change());

    // Kept with a TTL of 0.
    let mut h = Harness::with(
        config_with(&[("IMPORTJOB_TTL_SECONDS_AFTER_FINISHED", "0")]),
        None,
        None,
    );
    let (action, _) = h.reconcile(&old, vec![]).await;
    assert_eq!(action.unwrap(), Action::await_change());

    // Finished a minute ago: nothing yet, back when it is due (in at most a day here).
    let mut recent = old.clone();
    recent.status.as_mut().unwrap().finished_at =
        Some((chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339());
    let mut h = Harness::with(
        config_with(&[("IMPORTJOB_TTL_SECONDS_AFTER_FINISHED", "86400")]),
        None,
        None,
    );
    let (action, _) = h.reconcile(&recent, vec![]).await;
    let action = action.unwrap();
    assert_ne!(action, Action::await_change());
    assert_ne!(action, requeue(86400), "due in less than a day: {action:?}");
}

/// The API's cancel route (`POST /imports/{id}/cancel`) cancels the row only: on Kubernetes
/// the operator then shows `Cancelled` and stops the Job, whatever the Job says.
#[tokio::test]
async fn a_row_cancelled_through_the_api_cancels_the_importjob() {
    let pool = database().await;
    insert_job_row(&pool, "cancelled").await;
    let ij = ImportJob::test().with_status(running_status());
    let job = job_for(&ij).active(1);
    let pods = vec![pod_for(&ij, "a1b2c", "Running").state(running())];
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &pods);
    let (action, _) = h
        .reconcile(
            &ij,
            vec![
                expect_status_apply(&ij, |s| {
                    assert_eq!(s["phase"], "Cancelled", "{s:#}");
                    assert_eq!(condition(s, "Cancelled")["status"], "True", "{s:#}");
                }),
                expect_event("Cancelled", "Normal"),
                expect_delete_job(&ij, true),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(604800));
}

/// Issue 13, retry on Kubernetes: raising `spec.retries` on a Failed ImportJob (as
/// `kubectl patch` does: the row is still `failed`) moves the row back to `pending`, deletes
/// the failed run's Job, writes `Pending`/`Retrying` with `status.retries` and no end; the
/// next reconcile creates `<name>-retry-1` — the old Job and its OOM-killed pod, still in a
/// lagging cache, are not taken for it.
#[tokio::test]
async fn a_retry_request_runs_a_failed_import_again_as_a_new_job() {
    let pool = database().await;
    insert_job_row(&pool, "failed").await;
    let mut failed = running_status();
    failed.phase = Some("Failed".into());
    failed.reason = Some("OOMKilled".into());
    failed.finished_at = Some(EARLIER.into());
    let ij = ImportJob::test()
        .with_status(failed)
        .with_spec(|s| s.retries = Some(1));
    let old_job = job_for(&ij).condition("Failed", "BackoffLimitExceeded", "backoff limit");
    let old_pods = vec![pod_for(&ij, "a1b2c", "Failed").state(terminated("OOMKilled", 137))];
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&old_job), &old_pods);
    let retry_job = format!("{}-retry-1", name());
    let expected_name = retry_job.clone();
    let (action, seen) = h
        .reconcile(
            &ij,
            vec![
                expect_delete_job(&ij, true),
                expect_status_apply(&ij, move |s| {
                    assert_eq!(s["phase"], "Pending", "{s:#}");
                    assert_eq!(s["reason"], "Retrying", "{s:#}");
                    assert_eq!(s["retries"], 1, "{s:#}");
                    assert_eq!(s["jobName"], expected_name, "{s:#}");
                    assert_eq!(s["finishedAt"], Value::Null, "{s:#}");
                    assert_eq!(s["startedAt"], Value::Null, "{s:#}");
                    assert_eq!(condition(s, "Failed")["status"], "False", "{s:#}");
                    assert_eq!(condition(s, "Complete")["status"], "False", "{s:#}");
                }),
                expect_event("Pending", "Normal"),
            ],
        )
        .await;
    assert_eq!(
        action.unwrap(),
        Action::requeue(std::time::Duration::from_secs(1))
    );
    assert_eq!(job_row(&pool).await, ("pending".into(), None, false));

    // The next reconcile reads the new status; the cache still shows the old Job and pod.
    let retried = ij.clone().with_status(applied_status(&seen, 1));
    h.cache(Some(&old_job), &old_pods);
    let expected_name = retry_job.clone();
    let (action, _) = h
        .reconcile(
            &retried,
            vec![
                Expect::post(jobs_path())
                    .body(move |job| {
                        assert_eq!(job["metadata"]["name"], expected_name);
                        assert_eq!(job["metadata"]["labels"][JOB_ID_LABEL], JOB_ID);
                    })
                    .echo(201),
                expect_event("JobCreated", "Normal"),
                expect_status_apply(&retried, |s| {
                    assert_eq!(s["phase"], "Pending", "{s:#}");
                    assert_eq!(s["reason"], "JobCreated", "{s:#}");
                    assert_eq!(s["retries"], 1, "{s:#}");
                }),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(15));

    // A raise while the import is not Failed is acknowledged and ignored.
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let running = ImportJob::test()
        .with_status(running_status())
        .with_spec(|s| s.retries = Some(1));
    let job = job_for(&running).active(1);
    let mut h = Harness::with(OperatorConfig::defaults(), Some(pool.clone()), None);
    h.cache(Some(&job), &[]);
    let (action, _) = h
        .reconcile(
            &running,
            vec![
                expect_event("RetryIgnored", "Warning"),
                expect_status_apply(&running, |s| {
                    assert_eq!(s["phase"], "Running", "{s:#}");
                    assert_eq!(s["retries"], 1, "{s:#}");
                }),
            ],
        )
        .await;
    assert_eq!(action.unwrap(), requeue(1));
    assert_eq!(job_row(&pool).await.0, "processing");
}

/// An import whose ImportJob is gone (deleted with its namespace while the operator was
/// stopped): the sweep fails it, deletes its own objects with `OBJECT_RETENTION=delete`
/// (never another's), and forgets it; one whose ImportJob is there is left alone.
#[tokio::test]
async fn the_sweep_ends_an_import_whose_importjob_is_gone() {
    let dir = TempDir::new();
    let storage = fs_storage(&dir);
    let pool = database().await;
    insert_job_row(&pool, "processing").await;
    let ij = ImportJob::test();
    let id: uuid::Uuid = JOB_ID.parse().unwrap();
    sqlx::query("UPDATE import_jobs SET source_object = $1")
        .bind(&ij.spec.source.key)
        .execute(&*pool)
        .await
        .unwrap();
    put(&storage, &ij.spec.source.key).await;
    put(&storage, &ij.spec.report.as_ref().unwrap().key).await;
    put(&storage, "uploads/someone-else.csv").await;
    let config = config_with(&[("OBJECT_RETENTION", "delete")]);
    let h = Harness::with(config, Some(pool.clone()), Some(storage.clone()));
    crate::sweep::take(&h.ctx, id).await.unwrap();

    // Its ImportJob is there: nothing happens.
    assert_eq!(crate::sweep::sweep(&h.ctx, |_| true).await.unwrap(), 0);
    assert_eq!(job_row(&pool).await.0, "processing");

    assert_eq!(crate::sweep::sweep(&h.ctx, |_| false).await.unwrap(), 1);
    let (status, error, finished) = job_row(&pool).await;
    assert_eq!(status, "failed");
    assert_eq!(
        error.as_deref(),
        Some("importjob_deleted: the ImportJob was deleted before the import finished")
    );
    assert!(finished);
    assert_eq!(
        testing::list_objects(&storage).await,
        vec!["uploads/someone-else.csv".to_string()],
        "only this import's objects are deleted"
    );
    // Forgotten: the next sweep has nothing to do.
    assert_eq!(crate::sweep::sweep(&h.ctx, |_| false).await.unwrap(), 0);
}

/// With `OBJECT_RETENTION=keep` a finished import stays as it ended, its objects kept; and
/// a row whose upload key is not its own (whatever was written) never has it deleted.
#[tokio::test]
async fn the_sweep_keeps_a_finished_import_and_never_deletes_anothers_objects() {
    let dir = TempDir::new();
    let storage = fs_storage(&dir);
    let pool = database().await;
    insert_job_row(&pool, "done").await;
    let id: uuid::Uuid = JOB_ID.parse().unwrap();
    let theirs = format!("uploads/{USER_ID}/{}.csv", uuid::Uuid::new_v4());
    sqlx::query("UPDATE import_jobs SET source_object = $1")
        .bind(&theirs)
        .execute(&*pool)
        .await
        .unwrap();
    put(&storage, &theirs).await;
    for retention in ["keep", "delete"] {
        let config = config_with(&[("OBJECT_RETENTION", retention)]);
        let h = Harness::with(config, Some(pool.clone()), Some(storage.clone()));
        crate::sweep::take(&h.ctx, id).await.unwrap();
        assert_eq!(crate::sweep::sweep(&h.ctx, |_| false).await.unwrap(), 1);
        assert_eq!(job_row(&pool).await, ("done".into(), None, false));
        assert_eq!(testing::list_objects(&storage).await, vec![theirs.clone()]);
    }
}

/// An ImportJob from before, with the finalizer the operator used to add: it is removed
/// (another controller's stays), also while it is being deleted, and nothing else is done.
#[tokio::test]
async fn the_finalizer_of_before_is_removed() {
    let mut ij = ImportJob::test().with_phase("Running").deleting();
    ij.finalizers_mut().push("example.com/other".into());
    ij.finalizers_mut()
        .push(crate::sweep::LEGACY_FINALIZER.into());
    let mut h = Harness::new();
    let (action, _) = h.reconcile(&ij, vec![expect_finalizer_removed(&ij)]).await;
    assert_eq!(action.unwrap(), Action::await_change());
    // Without it, a deleted ImportJob is the garbage collector's: no request.
    let mut gone = ij.clone();
    gone.finalizers_mut()
        .retain(|f| f != crate::sweep::LEGACY_FINALIZER);
    let (action, _) = h.reconcile(&gone, vec![]).await;
    assert_eq!(action.unwrap(), Action::await_change());
}
