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
        Fault::ImagePullBackOffFor(Duration::from_secs(4)),
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
    let retrying = seen
        .iter()
        .filter_map(|o| o.ij.status.clone())
        .find(|s| s.reason.as_deref() == Some("RetryingAfterOOMKilled"))
        .expect("the OOM kill showed in the status");
    assert_eq!(
        retrying.message.as_deref(),
        Some("OOM-killed at 256Mi, retrying with 512Mi")
    );
    let st = seen.last().unwrap().ij.status.clone().unwrap();
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
