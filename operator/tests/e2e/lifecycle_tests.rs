//! "Try later" means later: what fixes itself is waited out, what needs more memory gets it.
//! A database that refuses connections for a while costs no attempt, an image pull that
//! backs off for less than `IMPORTER_START_GRACE_SECONDS` ends done, and an OOM-killed
//! import runs again with twice the memory limit and ends done.

use crate::{
    follow,
    harness::{assert_same_outcome, csv, outcome, reference_run, Options, Stack},
    id_of,
    kube_double::JOBS,
    kubelet::Fault,
    MINUTE,
};
use bulk_import_core::crd::resource_name;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

fn memory_limit(job: &Value) -> String {
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn exit_code(pod: &Value) -> Option<i64> {
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_connections_for_a_while_costs_no_attempt() {
    let file = csv(300);
    let want = reference_run(&file, "insert_only", 50).await;
    // No retry at all: one counted failure would fail the Job.
    let stack = Stack::start(Options {
        batch_size: 50,
        backoff_limit: 0,
        ..Default::default()
    })
    .await;
    stack
        .kubelet
        .inject("refused.csv", Fault::DatabaseRefuses { times: 1 });
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "refused", "insert_only", "refused.csv", &file)
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let seen = follow(&stack, &token, id, 4 * MINUTE).await;
    let last = seen.last().unwrap();
    assert_eq!(
        last.ij.status.as_ref().unwrap().phase.as_deref(),
        Some("Complete")
    );
    assert_same_outcome(&outcome(&stack.pool, &stack.storage, id).await, &want);
    // The fault happened: a pod exited 75 ("try later"), and it was not counted.
    let pods = stack.pods(id);
    let tried_later = pods.iter().filter(|p| exit_code(p) == Some(75)).count();
    assert_eq!(tried_later, 1, "one pod found the database refusing");
    let refused = pods.iter().find(|p| exit_code(p) == Some(75)).unwrap();
    let log = stack
        .kubelet
        .log(refused["metadata"]["name"].as_str().unwrap());
    assert!(log.contains("Postgres"), "{log}");
    let kjob = stack.job(id).unwrap();
    assert_eq!(
        kjob["status"]["failed"].as_i64().unwrap_or(0),
        0,
        "no attempt counted: {kjob:#}"
    );
    assert_eq!(kjob["status"]["succeeded"].as_i64(), Some(1));
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_backing_off_within_the_grace_period_ends_done() {
    let stack = Stack::start(Options::default()).await;
    stack.kubelet.inject(
        "slow-registry.csv",
        // Long enough that a reconcile under load still sees it (the status is sampled).
        Fault::ImagePullBackOffFor(Duration::from_secs(10)),
    );
    let token = stack.user().await;
    let (code, job) = stack
        .upload(
            &token,
            "pull",
            "insert_only",
            "slow-registry.csv",
            &csv(100),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let seen = follow(&stack, &token, id, 2 * MINUTE).await;
    // The status said what it waits for, since when and until when.
    let waiting = seen
        .iter()
        .filter_map(|o| o.ij.status.clone())
        .find(|s| s.reason.as_deref() == Some("ImagePullBackOff"))
        .expect("the back-off showed in the status");
    assert_eq!(waiting.phase.as_deref(), Some("Pending"));
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("waiting for the image pull since") && message.contains("failing after"),
        "{message}"
    );
    let st = seen.last().unwrap().ij.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Complete"));
    assert_eq!(stack.row(id).await.status().as_str(), "done");
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1, "the same Job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_import_runs_again_with_a_larger_memory_limit() {
    let file = csv(2000);
    let want = reference_run(&file, "insert_only", 50).await;
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    // The import needs more than the default 256Mi: killed below 512Mi.
    stack.kubelet.inject(
        "big.csv",
        Fault::OomKilledBelow {
            bytes: 512 << 20,
            after: Duration::from_millis(1500),
        },
    );
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "oom", "insert_only", "big.csv", &file)
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let seen = follow(&stack, &token, id, 3 * MINUTE).await;
    let name = resource_name(id);
    let st = seen.last().unwrap().ij.status.clone().unwrap();
    // The status says so: its OOMKilled condition, the limit and the count.
    let oom = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "OOMKilled")
        .expect("an OOMKilled condition");
    assert_eq!(
        (
            oom.status.as_str(),
            oom.reason.as_str(),
            oom.message.as_str()
        ),
        (
            "True",
            "MemoryLimitRaised",
            "OOM-killed at 256Mi, retrying with 512Mi"
        )
    );
    assert_eq!(st.phase.as_deref(), Some("Complete"), "{st:?}");
    assert_eq!(st.memory_limit.as_deref(), Some("512Mi"));
    assert_eq!(st.oom_retries, Some(1));
    let second = format!("{name}-oom-1");
    assert_eq!(st.job_name.as_deref(), Some(second.as_str()));
    // The first Job ran with 256Mi and was killed; the second with 512Mi, once each.
    assert_eq!(stack.creates(&JOBS, &name), 1);
    assert_eq!(stack.creates(&JOBS, &second), 1);
    let next = stack
        .double
        .get_opt(&JOBS, crate::NS, &second)
        .expect("the second Job");
    assert_eq!(memory_limit(&next), "512Mi");
    let events = crate::events_about(&stack, &name);
    assert!(
        events
            .iter()
            .any(|(t, r)| t == "Warning" && r == "OOMKilled"),
        "{events:?}"
    );
    // Resumed from the checkpoint of the killed run, and exact.
    assert_same_outcome(&outcome(&stack.pool, &stack.storage, id).await, &want);
}

/// `kubectl delete namespace` after the operator pod went first: nothing waits for the
/// operator (ImportJobs carry no finalizer), so the namespace empties — no ImportJob, Job,
/// pod or finalizer is left. The running import's importer is stopped with its pod; when an
/// operator of that namespace and release runs again, its sweep fails the import whose
/// ImportJob vanished and deletes both imports' objects (`OBJECT_RETENTION=delete`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_with_the_operator_stopped_leaves_nothing_behind() {
    let mut stack = Stack::start(Options {
        slow_ms: 5,
        batch_size: 50,
        retention: "delete",
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, done) = stack
        .upload(&token, "done", "insert_only", "done.csv", &csv(50))
        .await;
    let done = id_of(&done);
    follow(&stack, &token, done, 2 * MINUTE).await;
    let (_, running) = stack
        .upload(&token, "running", "insert_only", "running.csv", &csv(4000))
        .await;
    let running = id_of(&running);
    stack
        .eventually("the import processing", MINUTE, || async {
            let under_way = stack.row(running).await.processed_rows > 100;
            let pod = stack
                .pods(running)
                .into_iter()
                .any(|p| p["status"]["phase"] == "Running");
            (under_way && pod).then_some(())
        })
        .await;
    let objects = bulk_import_core::testing::list_objects(&stack.storage).await;
    assert!(!objects.is_empty(), "both imports have objects");

    // The operator goes first.
    stack.operators[0].terminate().await;
    let left = stack
        .eventually("the namespace empty", MINUTE, || async {
            let left = stack.double.delete_namespace(crate::NS);
            left.is_empty().then_some(left)
        })
        .await;
    assert!(left.is_empty());
    for kind in [&crate::IMPORTJOBS, &JOBS, &crate::kube_double::PODS] {
        let (items, _) = stack.double.list(
            kind,
            Some(crate::NS),
            &crate::kube_double::Selector::default(),
        );
        assert!(items.is_empty(), "{}: {items:?}", kind.plural);
    }
    // Nobody ended the running import yet: its importer was stopped with its pod.
    assert_eq!(stack.row(running).await.status().as_str(), "processing");
    assert_eq!(stack.row(done).await.status().as_str(), "done");

    // An operator of the namespace and release comes back: its sweep ends what was left.
    stack.operators[0].start();
    stack
        .eventually(
            "the vanished import failed, the objects gone",
            MINUTE,
            || async {
                let failed = stack.row(running).await.status().as_str() == "failed";
                let objects = bulk_import_core::testing::list_objects(&stack.storage).await;
                (failed && objects.is_empty()).then_some(())
            },
        )
        .await;
    let row = stack.row(running).await;
    assert_eq!(row.error_code.as_deref(), Some("importjob_deleted"));
    assert!(row.processed_rows < 4000, "stopped before the end");
    assert_eq!(
        stack.row(done).await.status().as_str(),
        "done",
        "a finished import stays done"
    );
}

/// Helm left an older CRD (without `status.memoryLimit`): the operator's start check names the
/// missing field and the upgrade command in one error line and a Warning Event on its pod, and
/// the operator goes on running imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_check_at_start_names_the_missing_field() {
    let stack = Stack::start(Options {
        crd_without_status_field: Some("memoryLimit"),
        ..Default::default()
    })
    .await;
    let line = stack
        .eventually("the error line", MINUTE, || async {
            stack.operators[0]
                .logs()
                .lines()
                .find(|l| l.contains("ERROR") && l.contains("lacks"))
                .map(str::to_string)
        })
        .await;
    assert!(line.contains("status.memoryLimit"), "{line}");
    assert!(
        line.contains(
            "kubectl apply --server-side --force-conflicts -f charts/bulk-import/crds/importjobs.bulkimport.dev.yaml"
        ),
        "{line}"
    );
    let (events, _) = stack.double.list(
        &crate::EVENTS,
        Some(crate::NS),
        &crate::kube_double::Selector::default(),
    );
    let event = events
        .iter()
        .find(|e| e["reason"] == "OutdatedCRD")
        .expect("an OutdatedCRD Event");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["name"], "operator-0");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("status.memoryLimit") && note.contains("--force-conflicts"),
        "{note}"
    );
    // It goes on: an import still runs.
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "after", "insert_only", "after.csv", &csv(20))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let last = follow(&stack, &token, id_of(&job), MINUTE)
        .await
        .pop()
        .unwrap();
    assert_eq!(last.row.status().as_str(), "done");
}
