//! The API (with its local executor and the real importer) while what it depends on fails.
//! Services that are stopped are private instances (`importer/tests/services/mod.rs`).
//!
//! - Redis stopped: /ready says so (200 `degraded`: the pod keeps serving); register, login (the limiter fails open, as documented)
//!   and imports keep working; live progress falls back to polling Postgres; with Redis back,
//!   login limiting works again.
//! - Garage stopped: uploads get 503 `service_unavailable` (also when it dies mid-upload),
//!   /ready names storage (200 `degraded`), nothing is left half-written (no object, no job, the key is free);
//!   with Garage back the same key uploads and imports.
//! - 50 concurrent imports while the API and its importers are SIGKILLed at random points
//!   (seeded): every job ends `done` with exact counts, no row applied twice.

use crate::{common, services};
use common::{csv_rows, error_body, Backend, TestApp};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use services::{PrivateGarage, PrivateRedis};
use std::time::{Duration, Instant};

async fn ready(app: &TestApp) -> (StatusCode, Value) {
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn upload_id(app: &TestApp, token: &str, key: &str, file: &[u8]) -> String {
    let r = app.upload(token, Some(key), "insert_only", file).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Reads the job's event stream to its end; returns the snapshots.
async fn events(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let r = app.get(token, &format!("/imports/{id}/events")).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Some(chunk) = tokio::time::timeout(deadline - Instant::now(), body.next())
        .await
        .expect("the stream ends when the job ends")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn redis_stopped_imports_logins_and_live_progress_keep_working() {
    let mut redis = PrivateRedis::start(None);
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("REDIS_URL", &redis.url()),
            ("IMPORT_SLOW_MS", "10"),
            ("BATCH_SIZE", "20"),
        ],
    )
    .await;
    let token = app.user().await;
    assert_eq!(ready(&app).await.0, StatusCode::OK);

    redis.stop();
    // Degraded, not unready: the pod stays in the Service.
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(body["checks"]["storage"], "up");

    // Logins work, and the limiter fails open: failures past the limit still get 401.
    let email = format!("r{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(app.register(&email, "pass12345").await.status(), 201);
    for _ in 0..7 {
        assert_eq!(
            app.login(&email, "Wrong-pass-1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login(&email, "pass12345").await.status(),
        StatusCode::OK
    );
    let logs = app.logs();
    assert!(
        logs.contains("redis unavailable"),
        "and it says so in the log: {logs}"
    );

    // An import runs to the end; its event stream polls Postgres instead of Redis.
    let id = upload_id(&app, &token, "no-redis", &csv_rows(300)).await;
    let snapshots = events(&app, &token, &id).await;
    let last = snapshots.last().unwrap();
    assert_eq!(last["status"], "done");
    assert_eq!(last["processed_rows"], 300);
    assert_eq!(last["error_rows"], 30);
    assert!(
        snapshots
            .iter()
            .filter(|s| s["status"] == "processing")
            .count()
            >= 2,
        "progress while it ran: {snapshots:?}"
    );

    // Redis back: ready again, and limiting is on again.
    redis.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&app).await.1["status"] != "ready" {
        assert!(Instant::now() < deadline, "not ready after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        app.login(&email, "Wrong-pass-1").await;
    }
    assert_eq!(
        app.login(&email, "pass12345").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn job_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn garage_stopped_uploads_get_503_and_nothing_is_half_written() {
    let mut garage = PrivateGarage::start();
    let vars = garage.vars();
    let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(Backend::S3, &overrides).await;
    let token = app.user().await;
    let file = csv_rows(50);

    // Storage dies in the middle of an upload (a streamed, chunked body).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let part = reqwest::multipart::Part::stream(body).file_name("mid.csv");
    let request = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "mid-upload")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send();
    let feeder = async {
        let chunk = bytes::Bytes::from("mid@example.com,a,b,c,d\n".repeat(40_000)); // ~1 MB
        for _ in 0..3 {
            tx.send(Ok(chunk.clone())).await.unwrap();
        }
        garage.stop();
        for _ in 0..12 {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let (r, ()) = tokio::join!(request, feeder);
    assert_eq!(
        error_body(r.unwrap()).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable".into()
        )
    );

    // A new upload while it is down.
    let r = app.upload(&token, Some("down"), "insert_only", &file).await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable".into()
        )
    );
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["degraded"], serde_json::json!(["storage"]));
    assert_eq!(body["checks"]["storage"], "down");
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(job_count(&app).await, 0, "no job row left behind");

    garage.start_server();
    assert!(
        app.storage.list("").await.unwrap().is_empty(),
        "no object left behind"
    );
    assert_eq!(ready(&app).await.1["status"], "ready");
    // The keys were released: the same keys now upload and import.
    for key in ["mid-upload", "down"] {
        let id = upload_id(&app, &token, key, &file).await;
        let done = app.wait_finished(&token, &id).await;
        assert_eq!(done["status"], "done");
        assert_eq!(done["processed_rows"], 50);
    }
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|v| (v, rx)) })
}

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed
/// with the same kills: `CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Importer processes running one of `ids` (children of the API, or orphans of a killed one).
fn importer_pids(ids: &[String]) -> Vec<u32> {
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("bulk-import-importer")
            && ids.iter().any(|id| cmdline.contains(id.as_str()))
        {
            pids.push(pid);
        }
    }
    pids
}

fn sigkill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

/// Job `i`'s file: `rows` rows with emails of its own, every 10th bad.
fn chaos_file(i: usize, rows: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for r in 0..rows {
        if r % 10 == 9 {
            out.push_str(&format!("bad-{i}-{r},x,,,\n"));
        } else {
            out.push_str(&format!("j{i}-u{r}@example.com,F{r},L{r},,C{i}\n"));
        }
    }
    out.into_bytes()
}

#[tokio::test]
async fn fifty_concurrent_imports_survive_random_kills_of_the_api_and_importers() {
    const JOBS: usize = 50;
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05EE_D0FC_4A05);
    let mut rng = Rng(seed | 1);
    let mut app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("IMPORT_SLOW_MS", "1"),
            ("BATCH_SIZE", "25"),
            ("LOCAL_MAX_CONCURRENT_IMPORTS", "4"),
            // Kills are not the importer's fault: let the executor run it as often as needed.
            ("LOCAL_MAX_ATTEMPTS", "100"),
            ("RUST_LOG", "warn"),
            // One user uploads all 50 at once: lift the per-user quotas (abuse.rs tests them).
            ("UPLOADS_MAX_PER_USER", "50"),
            ("UPLOADS_MAX_CONCURRENT", "50"),
            ("JOBS_MAX_UNFINISHED_PER_USER", "50"),
            // …and the organization's (fairness.rs tests them); uploads retried after a kill
            // count as new jobs again.
            ("UPLOADS_MAX_PER_ORG", "50"),
            ("UPLOADS_RESERVED", "0"),
            ("JOBS_MAX_UNFINISHED_PER_ORG", "50"),
            ("JOBS_CREATED_MAX_PER_ORG", "100000"),
        ],
    )
    .await;
    let token = app.user().await;
    let sizes: Vec<usize> = (0..JOBS).map(|_| 100 + rng.below(300) as usize).collect();
    let uploads = (0..JOBS).map(|i| {
        let file = chaos_file(i, sizes[i]);
        let (app, token) = (&app, &token);
        async move { upload_id(app, token, &format!("chaos-{i}"), &file).await }
    });
    let ids: Vec<String> = futures_util::future::join_all(uploads).await;
    println!(
        "chaos seed {seed}: {} rows in {JOBS} jobs",
        sizes.iter().sum::<usize>()
    );

    // Kill something every 150–600 ms until every job is done (at most 40 kills).
    let started = Instant::now();
    let (mut api_kills, mut importer_kills) = (0, 0);
    while api_kills + importer_kills < 40 {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(450))).await;
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM import_jobs WHERE status NOT IN ('done', 'failed')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        if rng.below(4) == 0 {
            app.kill(); // SIGKILL; its importers live on as orphans
            api_kills += 1;
            app.start().await;
        } else {
            let pids = importer_pids(&ids);
            if !pids.is_empty() {
                sigkill(pids[rng.below(pids.len() as u64) as usize]);
                importer_kills += 1;
            }
        }
    }
    println!(
        "{api_kills} API kills, {importer_kills} importer kills in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(api_kills > 0 && importer_kills > 0, "the chaos happened");

    let mut expected_customers = 0;
    for (i, id) in ids.iter().enumerate() {
        let rows = sizes[i] as i64;
        let bad = rows / 10;
        let job = app.wait_finished(&token, id).await;
        assert_eq!(job["status"], "done", "job {i}: {job}");
        assert_eq!(
            (
                &job["processed_rows"],
                &job["inserted_rows"],
                &job["error_rows"]
            ),
            (&rows.into(), &(rows - bad).into(), &bad.into()),
            "job {i}: exact counts"
        );
        expected_customers += rows - bad;
        let (customers, errors): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM customers WHERE last_import_id = $1::uuid), \
                    (SELECT count(*) FROM import_errors WHERE job_id = $1::uuid)",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            (customers, errors),
            (rows - bad, bad),
            "job {i}: applied once"
        );
    }
    let (customers, jobs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM import_jobs)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(customers, expected_customers);
    assert_eq!(jobs, JOBS as i64, "one job per key, none twice");
}

/// A client that sends its whole upload, then hangs up before the answer (as wrk does at the
/// end of a load run). With storage slow at that moment, hyper drops the handler on the
/// closed connection: the reservation must not stay `uploading` for ever (hidden from the
/// user, holding the key until a retry after 60 s, with the stored object orphaned).
#[tokio::test]
async fn a_client_hanging_up_after_its_upload_leaves_no_reservation_behind() {
    use tokio::io::AsyncWriteExt;
    let garage = PrivateGarage::start();
    let vars = garage.vars();
    let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(Backend::S3, &overrides).await;
    let token = app.user().await;
    let boundary = "hangup";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"h.csv\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&csv_rows(10));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: hangup\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    garage.freeze(true);
    let mut conn = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    // The reservation exists once the handler runs; then hang up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while job_count(&app).await == 0 {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    garage.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let uploading: i64 =
            sqlx::query_scalar("SELECT count(*) FROM import_jobs WHERE status = 'uploading'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if uploading == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reservation stayed `uploading` after the client hung up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
