//! The API process's life cycle: killed mid-import and restarted, stopped with SIGTERM, and
//! its memory while a 1 GiB upload streams through it.

mod common;

use common::{csv_rows, Backend, TestApp};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn wait_rows(app: &TestApp, id: &str, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.job(id).await.processed_rows < rows {
        assert!(Instant::now() < deadline, "no progress: {}", app.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn importer_pids(id: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-f")
        .arg("--")
        .arg(format!("--job-id {id}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

async fn assert_exact(app: &TestApp, token: &str, id: &str, rows: i64) {
    let done = app.wait_finished(token, id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["processed_rows"], rows);
    assert_eq!(done["inserted_rows"], rows - rows / 10);
    assert_eq!(done["error_rows"], rows / 10);
    let (customers, errors): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM import_errors WHERE job_id = $1::uuid)",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((customers, errors), (rows - rows / 10, rows / 10));
}

#[tokio::test]
async fn api_and_importer_killed_mid_import_then_restarted() {
    let mut app = TestApp::spawn_with(
        Backend::S3,
        &[("IMPORT_SLOW_MS", "1"), ("BATCH_SIZE", "50")],
    )
    .await;
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("crash"), "insert_only", &csv_rows(2_000))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    wait_rows(&app, &id, 300).await;
    // The machine "crashes": the API and its importer die at once.
    app.kill();
    for pid in importer_pids(&id) {
        std::process::Command::new("kill")
            .arg("-KILL")
            .arg(&pid)
            .status()
            .unwrap();
    }
    let stopped_at = app.job(&id).await.processed_rows;
    assert!(stopped_at < 2_000);
    app.start().await;
    assert_exact(&app, &token, &id, 2_000).await;
    assert_eq!(
        app.job(&id).await.attempts,
        2,
        "resumed once, from its checkpoint"
    );
}

#[tokio::test]
async fn api_killed_while_its_importer_lives_on() {
    let mut app = TestApp::spawn_with(
        Backend::S3,
        &[("IMPORT_SLOW_MS", "1"), ("BATCH_SIZE", "50")],
    )
    .await;
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("orphan"), "insert_only", &csv_rows(1_500))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    wait_rows(&app, &id, 200).await;
    app.kill();
    // The restarted API resumes the job while the first importer still runs it: the job's
    // lock makes the second wait, and it finds the job done.
    app.start().await;
    assert_exact(&app, &token, &id, 1_500).await;
}

#[tokio::test]
async fn sigterm_drains_and_stops_importers_at_a_batch_boundary() {
    let mut app = TestApp::spawn_with(
        Backend::Fs,
        &[("IMPORT_SLOW_MS", "2"), ("BATCH_SIZE", "50")],
    )
    .await;
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("term"), "insert_only", &csv_rows(2_000))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    wait_rows(&app, &id, 100).await;
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(app.pid().to_string())
        .status()
        .unwrap();
    let mut child = app.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the API did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "graceful exit: {status}");
    assert!(importer_pids(&id).is_empty(), "the importer stopped too");
    let job = app.job(&id).await;
    assert_eq!(job.status(), bulk_import_core::JobStatus::Processing);
    assert!(job.processed_rows < 2_000);
    app.start().await;
    assert_exact(&app, &token, &id, 2_000).await;
}

/// A 1 GiB upload streams through the API: its peak RSS (VmHWM) stays under 100 MiB.
#[tokio::test]
async fn a_1_gib_upload_keeps_the_api_under_100_mib() {
    const GIB: u64 = 1024 * 1024 * 1024;
    // The importer is replaced by `true`: this test is about the upload only.
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("MAX_UPLOAD_BYTES", &(2 * GIB).to_string()),
            ("IMPORTER_BIN", "/bin/true"),
            ("LOCAL_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let token = app.user().await;
    let line = format!("someone@example.com,{},,,\n", "x".repeat(1000));
    let lines = GIB / line.len() as u64;
    let chunk: bytes::Bytes = line.repeat(64).into();
    let chunks = (lines / 64) as usize;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ));
    let part = reqwest::multipart::Part::stream(body).file_name("huge.csv");
    let started = Instant::now();
    let r = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "huge")
        .timeout(Duration::from_secs(600))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let size = job["file_size"].as_u64().unwrap();
    assert!(size > GIB - 64 * 1100);
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        .unwrap();
    println!(
        "1 GiB upload: {} bytes in {:.1} s, API peak RSS {:.1} MiB",
        size,
        started.elapsed().as_secs_f64(),
        hwm_kib as f64 / 1024.0
    );
    assert!(hwm_kib < 100 * 1024, "peak RSS {hwm_kib} KiB");
    let job = app.job(job["id"].as_str().unwrap()).await;
    app.storage.delete(&job.source_object).await.unwrap();
}
