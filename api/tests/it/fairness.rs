//! Fair shares against the real API and importer binaries over real HTTP, with the real
//! Postgres, Redis and storage (docs/reliability.md, Abuse): what a handful of hostile
//! accounts can hold, and the smaller holes around a job's life.
//!
//! - 16 trickling uploads from 8 accounts leave a new user's upload room (201);
//! - a trickle is cut 408 `upload_too_slow` at the end of its rate window, an upload that
//!   never ends 408 `upload_timeout` at `UPLOAD_TIMEOUT_SECONDS`, and both keys work again;
//! - 40 parallel slow replays of one key by one user: all but the user's two upload slots
//!   answered 429;
//! - an upload-cancel-delete loop stops at `JOBS_CREATED_MAX_PER_ORG` (429
//!   `too_many_new_jobs`); an organization's stored bytes stop at `ORG_STORAGE_QUOTA_BYTES`
//!   (413 `storage_quota_exceeded`), reports counted, and deleting frees them;
//! - a job failed `deadline_exceeded` and retried gets a fresh deadline;
//! - a job cancelled, or cancelled and deleted, while its report is being written leaves no
//!   report object.

use crate::common;
use common::{csv_rows, error_body, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CSV_HEADER: &[u8] = b"email,first_name,last_name,phone,city\n";

/// Reads one HTTP/1.1 response (status line, headers, a Content-Length body) from a raw
/// connection; returns the status and the body's `code`.
async fn read_response(conn: &mut (impl AsyncReadExt + Unpin)) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body: Value =
                serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
            return (status, body["code"].as_str().unwrap_or("").to_string());
        }
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return (
                0,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens `POST /imports` on a raw connection and sends the request head and the multipart
/// head up to the file's data (declaring a body of `length`); the caller sends the rest.
async fn open_upload(app: &TestApp, token: &str, key: &str, length: usize) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /imports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n\
         Content-Length: {length}\r\n\r\n{}",
        file_part_head()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

fn file_part_head() -> String {
    "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n\
     Content-Type: text/csv\r\n\r\n"
        .to_string()
}

/// A whole multipart body for `file`, as `open_upload` frames it.
fn multipart_body(file: &[u8]) -> Vec<u8> {
    let mut body = file_part_head().into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--XYZ--\r\n");
    body
}

/// An upload that sends `piece` every `every` until it is answered; returns the answer and
/// when it came.
fn trickle(
    conn: TcpStream,
    piece: &'static [u8],
    every: Duration,
) -> tokio::task::JoinHandle<(u16, String, Instant)> {
    tokio::spawn(async move {
        let (mut rd, mut wr) = conn.into_split();
        let writer = tokio::spawn(async move {
            wr.write_all(CSV_HEADER).await.ok();
            loop {
                tokio::time::sleep(every).await;
                if wr.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let (status, code) = read_response(&mut rd).await;
        writer.abort();
        (status, code, Instant::now())
    })
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("a job").to_string()
}

#[tokio::test]
async fn a_new_users_upload_is_answered_201_while_16_trickling_uploads_of_8_accounts_are_open() {
    // The default limits: 16 slots per process, 2 per user, 4 per organization, 4 reserved
    // for organizations holding none. Jobs stay pending (no importer needed).
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[("IMPORTER_BIN", "/bin/true"), ("LOCAL_MAX_ATTEMPTS", "1")],
    )
    .await;
    let mut tokens = vec![];
    for _ in 0..8 {
        tokens.push(app.user().await);
    }
    let newcomer = app.user().await;
    // Two uploads per account, each sending a few bytes every second (each resets the idle
    // timer); the default rate window (30 s) keeps them open through the test.
    let mut trickles = vec![];
    for (i, token) in tokens.iter().enumerate() {
        for j in 0..2 {
            let conn = open_upload(&app, token, &format!("trickle-{i}-{j}"), 10_000_000).await;
            trickles.push(trickle(conn, b"a@b.c,,,,\n", Duration::from_secs(1)));
        }
    }
    // Each trickle either holds a slot (its reservation is `uploading`) or was answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let uploading = count(
            &app,
            "SELECT count(*) FROM import_jobs WHERE status = 'uploading'",
        )
        .await;
        let answered = trickles.iter().filter(|t| t.is_finished()).count() as i64;
        if uploading + answered == 16 && uploading >= 12 {
            break uploading;
        }
        assert!(
            Instant::now() < deadline,
            "trickles did not settle: {uploading} uploading, {answered} answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let started = Instant::now();
    let r = app
        .upload(&newcomer, Some("new"), "insert_only", &csv_rows(5))
        .await;
    println!(
        "16 trickles of 8 accounts: {held} hold a slot, {} were refused; a new user's upload: {} after {:.2} s",
        16 - held,
        r.status(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    // The trickles still open hold their slots; those answered were refused for their share.
    for t in trickles {
        if t.is_finished() {
            let (status, code, _) = t.await.unwrap();
            assert_eq!((status, code.as_str()), (429, "too_many_uploads"));
        } else {
            t.abort();
        }
    }
}

#[tokio::test]
async fn a_trickle_is_cut_408_an_endless_upload_at_its_deadline_and_both_keys_work_again() {
    let (window, total) = (3, 8);
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("UPLOAD_MIN_BYTES_PER_SECOND", "1000"),
            ("UPLOAD_RATE_WINDOW_SECONDS", "3"),
            ("UPLOAD_TIMEOUT_SECONDS", "8"),
            ("IMPORTER_BIN", "/bin/true"),
            ("LOCAL_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let token = app.user().await;
    let opened = Instant::now();
    // 10 bytes a second: below 1000 per second, but never idle.
    let slow = trickle(
        open_upload(&app, &token, "slow", 10_000_000).await,
        b"s@b.c,,,,\n",
        Duration::from_secs(1),
    );
    // 2,000 bytes every 250 ms (8,000 per second): fast enough, but it never ends.
    let endless = trickle(
        open_upload(&app, &token, "endless", 1_000_000_000).await,
        &[b'x'; 2000],
        Duration::from_millis(250),
    );
    let (status, code, at) = slow.await.unwrap();
    let slow_after = at - opened;
    assert_eq!((status, code.as_str()), (408, "upload_too_slow"));
    let (status, code, at) = endless.await.unwrap();
    let endless_after = at - opened;
    assert_eq!((status, code.as_str()), (408, "upload_timeout"));
    println!(
        "trickle cut after {:.1} s (window {window} s); endless upload cut after {:.1} s (deadline {total} s)",
        slow_after.as_secs_f64(),
        endless_after.as_secs_f64()
    );
    // Cut at its first window (not at the idle timeout, 30 s), with 5 s of slack for a loaded
    // machine; the endless one not before its deadline, and within 5 s of it.
    assert!(
        slow_after < Duration::from_secs(window + 5),
        "{slow_after:?}"
    );
    assert!(
        endless_after >= Duration::from_secs(total),
        "{endless_after:?}"
    );
    assert!(
        endless_after < Duration::from_secs(total + 5),
        "{endless_after:?}"
    );
    // The keys were released (and the slots: the user may hold two) and work at once.
    assert_eq!(count(&app, "SELECT count(*) FROM import_jobs").await, 0);
    for key in ["slow", "endless"] {
        let r = app
            .upload(&token, Some(key), "insert_only", &csv_rows(3))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{key}");
    }
    assert_eq!(
        app.storage.list("uploads/").await.unwrap().len(),
        2,
        "no partial object of the cut uploads is left"
    );
}

#[tokio::test]
async fn forty_parallel_slow_replays_of_one_key_are_mostly_429() {
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[("IMPORTER_BIN", "/bin/true"), ("LOCAL_MAX_ATTEMPTS", "1")],
    )
    .await;
    let token = app.user().await;
    let file = csv_rows(200);
    let r = app
        .upload(&token, Some("replayed"), "insert_only", &file)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Each replay sends the same file in 20 pieces, 100 ms apart (about 2 s).
    let body = multipart_body(&file);
    let head_len = file_part_head().len();
    let replays = (0..40).map(|_| {
        let (app, token, body) = (&app, &token, body.clone());
        async move {
            let conn = open_upload(app, token, "replayed", body.len()).await;
            let (mut rd, mut wr) = conn.into_split();
            let rest = body[head_len..].to_vec();
            let writer = tokio::spawn(async move {
                for piece in rest.chunks(rest.len().div_ceil(20)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if wr.write_all(piece).await.is_err() {
                        return;
                    }
                }
                // Keep the write side open until the answer: a client's half-close ends the
                // connection before its answer.
                std::future::pending::<()>().await;
            });
            let answer = tokio::time::timeout(Duration::from_secs(60), read_response(&mut rd))
                .await
                .expect("every replay is answered");
            writer.abort();
            answer
        }
    });
    let answers = futures_util::future::join_all(replays).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited = answers
        .iter()
        .filter(|(s, c)| *s == 429 && c == "too_many_uploads")
        .count();
    println!("40 slow replays of one key: {ok} × 200, {limited} × 429");
    assert_eq!(ok + limited, 40, "{answers:?}");
    // The user holds at most two upload slots (UPLOADS_MAX_PER_USER); a replay answered 200
    // frees its slot, so a few more may get one on a slow machine: still mostly 429.
    assert!(limited >= 30, "{answers:?}");
    assert!(ok >= 2, "the replays that got a slot answer with the job");
    assert_eq!(count(&app, "SELECT count(*) FROM import_jobs").await, 1);
}

#[tokio::test]
async fn an_upload_cancel_delete_loop_stops_at_the_organizations_new_jobs_per_window() {
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("JOBS_CREATED_MAX_PER_ORG", "5"),
            ("IMPORTER_BIN", "/bin/true"),
            ("LOCAL_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let (token, other) = (app.user().await, app.user().await);
    let mut created = 0;
    let refused = loop {
        let r = app
            .upload(
                &token,
                Some(&format!("loop-{created}")),
                "insert_only",
                &csv_rows(2),
            )
            .await;
        if r.status() != StatusCode::CREATED {
            break r;
        }
        let id = id_of(&r.json().await.unwrap());
        let cancel = app
            .client
            .post(app.url(&format!("/imports/{id}/cancel")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), StatusCode::ACCEPTED);
        let delete = app
            .client
            .delete(app.url(&format!("/imports/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), StatusCode::NO_CONTENT);
        created += 1;
        assert!(created <= 5, "the loop was never stopped");
    };
    assert_eq!(created, 5, "five new jobs per window");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 3000 && retry_after <= 3600, "{retry_after}");
    assert_eq!(
        error_body(refused).await,
        (StatusCode::TOO_MANY_REQUESTS, "too_many_new_jobs".into())
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM import_jobs").await,
        0,
        "the key was released"
    );
    // Another organization is not affected.
    let r = app
        .upload(&other, Some("loop-0"), "insert_only", &csv_rows(2))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_organizations_stored_bytes_stop_at_its_quota_reports_included() {
    let app = TestApp::spawn_with(Backend::Fs, &[("ORG_STORAGE_QUOTA_BYTES", "12000")]).await;
    let (token, other) = (app.user().await, app.user().await);
    // About 7 KB with 20 bad rows: the upload and its two reports are stored.
    let file = csv_rows(200);
    assert!(file.len() > 6000 && file.len() < 12000);
    let first = app
        .upload(&token, Some("first"), "insert_only", &file)
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let id = id_of(&first.json().await.unwrap());
    assert_eq!(app.wait_finished(&token, &id).await["status"], "done");
    let report_size: i64 =
        sqlx::query_scalar("SELECT report_size FROM import_jobs WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let stored = app
        .storage
        .size(&format!("reports/{id}/errors.csv"))
        .await
        .unwrap()
        + app
            .storage
            .size(&format!("reports/{id}/rows.csv"))
            .await
            .unwrap();
    assert_eq!(report_size as u64, stored, "both reports are counted");
    // The same file again would pass 12,000 bytes: refused up front (Content-Length)…
    let r = app
        .upload(&token, Some("second"), "insert_only", &file)
        .await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "storage_quota_exceeded".into()
        )
    );
    // …and, without a Content-Length, cut while it streams.
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
            file.chunks(1000)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .file_name("chunked.csv");
    let r = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "chunked")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "storage_quota_exceeded".into()
        )
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM import_jobs").await,
        1,
        "keys released"
    );
    // Another organization has its own quota; deleting the job frees this one's.
    let r = app
        .upload(&other, Some("first"), "insert_only", &file)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let delete = app
        .client
        .delete(app.url(&format!("/imports/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let r = app
        .upload(&token, Some("second"), "insert_only", &file)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_job_failed_past_its_deadline_and_retried_gets_a_fresh_deadline() {
    // 5,000 rows at 5 ms each take 25 s: past the 10 s deadline.
    let mut app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("IMPORT_SLOW_MS", "5"),
            ("BATCH_SIZE", "50"),
            ("JOB_ACTIVE_DEADLINE_SECONDS", "10"),
        ],
    )
    .await;
    let token = app.user().await;
    let r = app
        .upload(&token, Some("late"), "insert_only", &csv_rows(5_000))
        .await;
    let id = id_of(&r.json().await.unwrap());
    let failed = app.wait_finished(&token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let first = app.job(&id).await;
    assert_eq!(first.error_code.as_deref(), Some("deadline_exceeded"));
    assert!(first.processed_rows < 5_000);
    // The same deadline, the rows now at full speed: the retry needs well under 10 s from its
    // own start, but its first start is more than 10 s ago.
    app.kill();
    app.vars.insert("IMPORT_SLOW_MS".into(), "0".into());
    app.start().await;
    let r = app
        .client
        .post(app.url(&format!("/imports/{id}/retry")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let done = app.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["processed_rows"], 5_000);
    let retried = app.job(&id).await;
    assert!(
        retried.started_at.unwrap() > first.finished_at.unwrap(),
        "the retry's start is the job's start"
    );
}

/// The importer processes running `--job-id <id>`.
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

#[tokio::test]
async fn a_job_cancelled_or_deleted_while_its_report_is_written_leaves_no_report_object() {
    // The importer waits 3 s after its last batch, before it writes the report and `done`:
    // the cancel (and the delete) land there.
    let app = TestApp::spawn_with(Backend::Fs, &[("IMPORT_PAUSE_BEFORE_FINISH_MS", "3000")]).await;
    let token = app.user().await;
    let mut ids = vec![];
    for key in ["deleted", "cancelled"] {
        let r = app
            .upload(&token, Some(key), "insert_only", &csv_rows(20))
            .await;
        ids.push(id_of(&r.json().await.unwrap()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        // Every batch committed (20 rows, 2 bad): the importer is in its pause.
        while app.job(id).await.processed_rows < 20 {
            assert!(Instant::now() < deadline, "the job did not load its rows");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = app
            .client
            .post(app.url(&format!("/imports/{id}/cancel")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = app
        .client
        .delete(app.url(&format!("/imports/{}", ids[0])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The importers write their reports after the pause, find their jobs gone or cancelled,
    // and exit.
    for id in &ids {
        while !importer_pids(id).is_empty() {
            assert!(Instant::now() < deadline, "the importer did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in ["errors.csv", "rows.csv"] {
            let key = format!("reports/{id}/{name}");
            assert!(
                app.storage.size(&key).await.is_err(),
                "{key} survived its job\n{}",
                app.logs()
            );
        }
    }
    assert!(app.job(&ids[1]).await.report_object.is_none());
}
