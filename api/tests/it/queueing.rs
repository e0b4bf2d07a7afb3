//! Admission in local mode (issue 25): at most `LOCAL_MAX_CONCURRENT_IMPORTS` importers at
//! once and `MAX_ACTIVE_IMPORTS_PER_ORG` per organization; the others are `queued` with
//! their `queue_position`, and the next slot goes round-robin across organizations.
//! Concurrency is read from the rows' `started_at`/`finished_at` (set by the importer's
//! claim and its end, both inside the slot), so the check is exact, not sampled.

use crate::common::{Backend, TestApp};
use bulk_import_core::JobRow;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A file of `rows` rows of its own emails (`tag`), one in ten invalid.
fn file(tag: &str, rows: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..rows {
        if i % 10 == 9 {
            out.push_str(&format!("bad-{tag}-{i},Bad,,,\n"));
        } else {
            out.push_str(&format!("{tag}-{i}@example.com,F{i},L{i},,City\n"));
        }
    }
    out.into_bytes()
}

/// The most intervals overlapping at any moment.
fn max_overlap(rows: &[&JobRow]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = rows
        .iter()
        .flat_map(|r| [(r.started_at.unwrap(), 1), (r.finished_at.unwrap(), -1)])
        .collect();
    // An end before a start at the same instant: a slot handed on.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

async fn upload_all(app: &TestApp, token: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let key = format!("{tag}{i}");
        let r = app
            .upload(token, Some(&key), "insert_only", &file(&key, 20))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let job: Value = r.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_runs_at_most_its_limits_and_queues_the_rest_fairly() {
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("LOCAL_MAX_CONCURRENT_IMPORTS", "3"),
            ("MAX_ACTIVE_IMPORTS_PER_ORG", "2"),
            ("IMPORT_SLOW_MS", "60"),
            ("BATCH_SIZE", "5"),
        ],
    )
    .await;
    let (a, b) = (app.user().await, app.user().await);
    let a_ids = upload_all(&app, &a, "a", 6).await;
    // A's last waits: queued, with its position.
    let last = a_ids.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = app.get_json(&a, &format!("/imports/{last}")).await;
        if job["status"] == "queued" {
            assert!(job["queue_position"].as_i64().unwrap() >= 1, "{job}");
            break;
        }
        assert_eq!(job["queue_position"], Value::Null, "{job}");
        assert!(Instant::now() < deadline, "never queued: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_ids = upload_all(&app, &b, "b", 2).await;
    let mut rows = Vec::new();
    for (token, id) in a_ids
        .iter()
        .map(|id| (&a, id))
        .chain(b_ids.iter().map(|id| (&b, id)))
    {
        let job = app.wait_finished(token, id).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["queue_position"], Value::Null, "{job}");
        let counts = ["processed_rows", "inserted_rows", "error_rows"].map(|k| job[k].as_i64());
        assert_eq!(counts, [Some(20), Some(18), Some(2)], "{job}");
        rows.push(app.job(id).await);
    }
    let all: Vec<&JobRow> = rows.iter().collect();
    let of_a: Vec<&JobRow> = rows
        .iter()
        .filter(|r| a_ids.contains(&r.id.to_string()))
        .collect();
    assert_eq!(max_overlap(&all), 3, "at most 3 at once, and 3 reached");
    assert_eq!(max_overlap(&of_a), 2, "at most 2 of one organization");
    // B's first did not wait for A's queue: it started before A's last three.
    let first_b = rows
        .iter()
        .filter(|r| b_ids.contains(&r.id.to_string()))
        .map(|r| r.started_at.unwrap())
        .min()
        .unwrap();
    let a_after = of_a
        .iter()
        .filter(|r| r.started_at.unwrap() > first_b)
        .count();
    assert!(
        a_after >= 3,
        "only {a_after} of A's started after B's first"
    );
}
