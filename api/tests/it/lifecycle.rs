//! The API process's life cycle: killed mid-import and restarted, killed alone while its
//! importer lives on, two replicas in local mode, a client hanging up after its upload,
//! stopped with SIGTERM, and its memory while a 1 GiB upload streams through it.

use crate::common;
use bulk_import_core::JobStatus;
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

/// Polls the job until it is done, asserting at every poll that it never went `failed`.
async fn done_without_failing(app: &TestApp, id: &str, secs: u64) -> bulk_import_core::JobRow {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job = app.job(id).await;
        assert_ne!(
            job.status(),
            JobStatus::Failed,
            "the job failed on the way: {:?}\n{}",
            job.error,
            app.logs()
        );
        if job.status() == JobStatus::Done {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "not done in time: {}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API alone is SIGKILLed; its importer child lives on and keeps the job for longer than
/// the claim wait and three runs' worth of time. A new API on the same database resumes the
/// job: its importers find a live claim and say "try later" (exit 75) — never a failed
/// attempt — until the first importer has finished.
#[tokio::test]
async fn api_killed_while_its_importer_lives_on_for_longer_than_three_attempts() {
    let mut app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("IMPORT_SLOW_MS", "3"),
            ("BATCH_SIZE", "100"),
            ("JOB_LEASE_SECONDS", "3"),
            ("LOCAL_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    let token = app.user().await;
    let rows = 10_000;
    let job: Value = app
        .upload(&token, Some("orphan"), "insert_only", &csv_rows(rows))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    wait_rows(&app, &id, 200).await;
    let orphans = importer_pids(&id);
    assert_eq!(orphans.len(), 1, "one importer runs the job");
    app.kill();
    app.start().await;
    // The new API's importer waits out the claim (lease 3 s + 5 s) and exits 75, at least
    // three times, while the first importer is still loading.
    let deadline = Instant::now() + Duration::from_secs(120);
    while app.logs().matches("cannot run the job now").count() < 3 {
        assert_ne!(app.job(&id).await.status(), JobStatus::Failed);
        assert!(Instant::now() < deadline, "no retries seen: {}", app.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.job(&id).await.status(),
        JobStatus::Processing,
        "the first importer is still loading"
    );
    let job = done_without_failing(&app, &id, 300).await;
    assert_exact(&app, &token, &id, rows as i64).await;
    assert!(job.error.is_none());
}

/// Two API replicas with `EXECUTOR=local` on one database: both run an importer for the same
/// job (the second resumes it at start); the claim lets one write, and the job is applied
/// once.
#[tokio::test]
async fn two_local_api_replicas_apply_each_job_once() {
    let app = TestApp::spawn_with(
        Backend::S3,
        &[("IMPORT_SLOW_MS", "2"), ("BATCH_SIZE", "100")],
    )
    .await;
    let token = app.user().await;
    let rows = 4_000;
    let job: Value = app
        .upload(&token, Some("replicas"), "insert_only", &csv_rows(rows))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    wait_rows(&app, &id, 200).await;
    let mut second = app.vars.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    second.insert("BIND_ADDR".into(), format!("127.0.0.1:{port}"));
    // The replica's importer logs "waiting" on the live claim at info.
    second.insert("RUST_LOG".into(), "info".into());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut replica = std::process::Command::new(env!("CARGO_BIN_EXE_bulk-import-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&second)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    // The replica resumes the job at start: a second importer for the same job, seen while
    // the first still runs (a job that ends first would prove nothing, so it fails the test).
    let deadline = Instant::now() + Duration::from_secs(60);
    while importer_pids(&id).len() < 2 {
        assert_ne!(
            app.job(&id).await.status(),
            JobStatus::Done,
            "the job ended before the replica's importer started"
        );
        assert!(
            Instant::now() < deadline,
            "the replica did not resume the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and that importer met the first one's live claim and waited instead of writing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if text.contains("another importer holds the job; waiting") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica's importer never met the live claim:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done_without_failing(&app, &id, 120).await;
    assert_exact(&app, &token, &id, rows as i64).await;
    let _ = replica.kill();
    let _ = replica.wait();
}

/// A client that sends the whole upload and hangs up without reading the answer: the job is
/// created and runs all the same.
#[tokio::test]
async fn a_client_hanging_up_after_the_last_byte_still_gets_its_job_run() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn(Backend::Fs).await;
    let token = app.user().await;
    let csv = csv_rows(300);
    let boundary = "XbOuNdArYx";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&csv);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let host = app.base.trim_start_matches("http://").to_string();
    let head = format!(
        "POST /imports?mode=insert_only HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: hang-up\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    drop(socket); // gone, without reading a byte of the answer
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let row: Option<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT id, status FROM import_jobs WHERE idempotency_key = 'hang-up'")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if let Some((id, status)) = row {
            if status == "done" {
                break id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not run: {}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let job = app.job(&id.to_string()).await;
    assert_eq!(job.processed_rows, 300);
}

/// Local mode gives each job the deadline a Kubernetes Job gets: past it, the importer is
/// stopped and the job failed with a clear, stable reason.
#[tokio::test]
async fn a_local_import_past_its_deadline_fails_with_a_clear_reason() {
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("IMPORT_SLOW_MS", "5"),
            ("BATCH_SIZE", "50"),
            ("JOB_ACTIVE_DEADLINE_SECONDS", "3"),
        ],
    )
    .await;
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("late"), "insert_only", &csv_rows(5_000))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let done = app.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    // The job JSON carries the code alone too, for clients that branch on it.
    assert_eq!(done["error_code"], "deadline_exceeded", "{done}");
    let job = app.job(&id).await;
    assert_eq!(job.error_code.as_deref(), Some("deadline_exceeded"));
    assert!(job.error.unwrap().contains("deadline of 3 s"));
    assert!(job.processed_rows < 5_000, "stopped before the end");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !importer_pids(&id).is_empty() {
        assert!(Instant::now() < deadline, "the importer was not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
