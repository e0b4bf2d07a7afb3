//! Attacks on the API over real HTTP, beyond the contract checks of `http.rs` (bad tokens,
//! other users' ids, security headers on success, per-email login limiting, 413):
//!
//! - secrets (database, Redis and S3 passwords, JWT secret, user passwords, access tokens,
//!   report link signatures) never reach the logs of a full run at `RUST_LOG=debug`;
//! - the upload's file name is never part of a storage key and comes back cleaned and
//!   JSON-escaped;
//! - SQL metacharacters, COPY escapes and control characters in every field are stored
//!   verbatim; formula cells come back neutralised in the downloaded errors.csv;
//! - an endless upload is cut at `MAX_UPLOAD_BYTES`, leaving nothing behind;
//! - a download link is not an access token and an access token is not a download link;
//! - another user's Idempotency-Key never replays their job;
//! - security headers are on error responses too; logins are limited per client address.

use crate::{common, services};
use common::{csv_rows, error_body, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use services::{PrivatePostgres, PrivateRedis};
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};
use uuid::Uuid;

type Customer = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn secret(tag: &str) -> String {
    format!("{tag}{}", Uuid::new_v4().simple())
}

#[tokio::test]
async fn secrets_never_appear_in_the_logs_of_a_full_run() {
    let db_password = secret("dbpw");
    let redis_password = secret("redispw");
    let jwt_secret = secret("jwt-secret-long-enough-");
    let pg = PrivatePostgres::with_password(&db_password);
    let db_url = pg.create_database().await;
    let redis = PrivateRedis::start(Some(&redis_password));
    let redis_url = redis.url();
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("DATABASE_URL", &db_url),
            ("REDIS_URL", &redis_url),
            ("JWT_SECRET", &jwt_secret),
            // Everything the API and its importers log, sqlx and the AWS SDK included.
            ("RUST_LOG", "debug"),
            ("BATCH_SIZE", "20"),
        ],
    )
    .await;
    let s3_secret = app.vars["S3_SECRET_KEY"].clone();
    let password = secret("Pw1-");
    let email = format!("{}@example.com", secret("s"));
    assert_eq!(app.register(&email, &password).await.status(), 201);
    assert_eq!(app.login(&email, "Wrong-pass-1").await.status(), 401);
    let login: Value = app.login(&email, &password).await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    let r = app
        .upload(&token, Some("secret-run"), "insert_only", &csv_rows(100))
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.wait_finished(&token, &id).await["status"], "done");
    let url = app.report_url(&token, &id, "").await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let signature = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-Signature="))
        .expect("a presigned S3 URL")
        .to_string();
    for path in [
        "/imports",
        &format!("/imports/{id}"),
        &format!("/imports/{id}/events"),
    ] {
        assert_eq!(app.get(&token, path).await.status(), 200);
    }
    assert_eq!(app.get("not-a-token", "/imports").await.status(), 401);
    assert_eq!(
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let logs = app.logs();
    assert!(
        logs.contains("import done") && logs.contains("DEBUG"),
        "the API and its importer logged at debug level"
    );
    for (what, value) in [
        ("database password", db_password.as_str()),
        ("Redis password", &redis_password),
        ("JWT secret", &jwt_secret),
        ("S3 secret key", &s3_secret),
        ("user password", &password),
        ("access token", &token),
        ("access token signature", token.rsplit('.').next().unwrap()),
        ("report link signature", &signature),
    ] {
        assert!(!logs.contains(value), "the {what} is in the logs");
    }
}

/// A multipart body built by hand, so that the file name goes out exactly as given.
fn raw_multipart(file_name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("b{}", Uuid::new_v4().simple());
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn the_file_name_is_never_a_key_and_comes_back_cleaned_and_escaped() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    // HTTP header values cannot carry C0 controls but a tab, so the C1 controls come as
    // UTF-8 (U+0085, U+009B); a raw ESC is refused by the multipart parser (below).
    let hostile =
        "..\\../../etc/passwd\\evil'\t\u{85}\u{9b}31m<img src=x onerror=alert(1)>;rm -rf ~.csv";
    let post = |name: &str, key: &str| {
        let (content_type, body) = raw_multipart(name, &csv_rows(10));
        app.client
            .post(app.url("/imports"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let r = post("esc\u{1b}[31m.csv", "esc").await.unwrap();
    assert_eq!(
        error_body(r).await,
        (StatusCode::BAD_REQUEST, "invalid_multipart".into())
    );
    let r = post(hostile, "name").await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let raw = r.text().await.unwrap();
    let job: Value = serde_json::from_str(&raw).unwrap();
    let name = job["file_name"].as_str().unwrap();
    assert!(
        name.ends_with("<img src=x onerror=alert(1)>;rm -rf ~.csv"),
        "{name}"
    );
    assert!(!name.contains(['/', '\\']), "no path: {name}");
    assert!(
        !name.chars().any(char::is_control),
        "no control characters: {name:?}"
    );
    assert!(!raw.contains('\u{1b}') && !raw.contains('\u{7}'));
    let id = job["id"].as_str().unwrap();
    app.wait_finished(&token, id).await;
    let user: Uuid = sqlx::query_scalar("SELECT id FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut keys = app.storage.list("").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("reports/{id}/errors.csv"),
            format!("reports/{id}/rows.csv"),
            format!("uploads/{user}/{id}.csv")
        ],
        "keys are made of ids only"
    );
    let listed: Value = app.get(&token, "/imports").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["file_name"], name);
}

#[tokio::test]
async fn sql_and_control_characters_are_stored_verbatim_and_formulas_neutralised() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let nasty = [
        "Robert'); DROP TABLE customers;--",
        "\\N",
        "\\.",
        "a\\tb\\\\c",
        "tab\there",
        "multi\r\nline",
        "\u{1}\u{8}\u{1b}[2J\u{7f}",
        "%s%n%x {{7*7}} ${jndi:ldap://127.0.0.1/x}",
        "\u{202e}gnp.exe \u{feff}é😀",
        " padded ",
        "\"quoted\", comma",
        "$$; SELECT pg_sleep(10); $$",
    ];
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut file = String::from("email,first_name,last_name,phone,city\n");
    let mut expected = vec![];
    for (i, v) in nasty.iter().enumerate() {
        let email = format!("o'neil+{i}--@example.com");
        file.push_str(&format!(
            "{},{},{},{},{}\n",
            email,
            quote(v),
            quote(v),
            quote(v),
            quote(v)
        ));
        expected.push((email, Some(v.to_string())));
    }
    // A bad row whose cells are formulas: errors.csv must not let a spreadsheet run them.
    file.push_str("=HYPERLINK(\"http://x\"),+SUM(A1),-1,@cmd,\"\tx\"\n");
    let r = app
        .upload(&token, Some("nasty"), "insert_only", file.as_bytes())
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_finished(&token, &id).await;
    assert_eq!(done["inserted_rows"], nasty.len());
    assert_eq!(done["error_rows"], 1);
    let rows: Vec<Customer> = sqlx::query_as(
        "SELECT email, first_name, last_name, phone, city FROM customers \
             ORDER BY last_import_line",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), nasty.len());
    for ((email, value), row) in expected.iter().zip(&rows) {
        assert_eq!(&row.0, email);
        for stored in [&row.1, &row.2, &row.3, &row.4] {
            assert_eq!(stored, value, "stored verbatim");
        }
    }
    let report = reqwest::get(app.report_url(&token, &id, "").await)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let report = String::from_utf8(report.to_vec()).unwrap();
    assert!(
        report.ends_with(",\"'=HYPERLINK(\"\"http://x\"\")\",'+SUM(A1),'-1,'@cmd,'\tx\r\n"),
        "formula cells are prefixed with ': {report}"
    );
}

#[tokio::test]
async fn an_endless_upload_is_cut_at_max_upload_bytes() {
    const LIMIT: u64 = 1024 * 1024;
    let app = TestApp::spawn_with(Backend::S3, &[("MAX_UPLOAD_BYTES", &LIMIT.to_string())]).await;
    let token = app.user().await;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let chunk = bytes::Bytes::from("endless@example.com,x,y,z,w\n".repeat(2048));
    // Never ends by itself: only the server can stop it.
    let endless = futures_util::stream::repeat_with(move || {
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk.clone())
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(endless))
        .file_name("endless.csv");
    let started = Instant::now();
    let r = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "endless")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    let elapsed = started.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    match r {
        Ok(r) => assert_eq!(
            error_body(r).await,
            (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large".into())
        ),
        // The server may close the connection while the client is still writing.
        Err(e) => assert!(sent >= LIMIT, "failed before the limit: {e}"),
    }
    // What may pass before the cut: the limit, the server's lingering drain after its early
    // answer (at most 8 MiB, `upload_limits`), and what loopback socket buffers and the
    // client's own buffers hold (several MiB each way). An uncut stream sends gigabytes.
    const SLACK: u64 = 8 * 1024 * 1024 + 16 * 1024 * 1024;
    assert!(
        sent < LIMIT + SLACK,
        "cut near the limit: {sent} bytes sent in {elapsed:?}"
    );
    assert!(
        app.storage.list("").await.unwrap().is_empty(),
        "nothing stored"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "the key was released");
    // And the key works again.
    let again = app
        .upload(&token, Some("endless"), "insert_only", &csv_rows(3))
        .await;
    assert_eq!(again.status(), 201);
}

#[tokio::test]
async fn download_links_and_access_tokens_are_not_interchangeable() {
    let app = TestApp::spawn(Backend::Fs).await;
    let token = app.user().await;
    let id = app
        .upload(&token, Some("x"), "insert_only", &csv_rows(20))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_finished(&token, &id).await;
    let url = app.report_url(&token, &id, "").await;
    let download_token = url.rsplit('/').next().unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    assert_eq!(
        app.get(download_token, "/imports").await.status(),
        StatusCode::UNAUTHORIZED,
        "a download link is not an access token"
    );
    let r = reqwest::get(app.url(&format!("/downloads/{token}")))
        .await
        .unwrap();
    assert_eq!(
        error_body(r).await,
        (StatusCode::FORBIDDEN, "invalid_link".into()),
        "an access token is not a download link"
    );
}

#[tokio::test]
async fn another_users_idempotency_key_never_replays_their_job() {
    let app = TestApp::spawn(Backend::Fs).await;
    let alice = app.user().await;
    let bob = app.user().await;
    let file = csv_rows(10);
    let a = app
        .upload(&alice, Some("shared-key"), "insert_only", &file)
        .await;
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = app
        .upload(&bob, Some("shared-key"), "insert_only", &file)
        .await;
    assert_eq!(b.status(), 201, "bob's key is his own");
    let b: Value = b.json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
    let bobs: Value = app.get(&bob, "/imports").await.json().await.unwrap();
    assert_eq!(bobs["total"], 1);
    assert_eq!(bobs["items"][0]["id"], b["id"]);
}

#[tokio::test]
async fn error_responses_carry_the_security_headers() {
    let app = TestApp::spawn_with(Backend::Fs, &[("MAX_UPLOAD_BYTES", "10")]).await;
    let token = app.user().await;
    let responses = [
        app.client.get(app.url("/imports")).send().await.unwrap(),
        app.get(&token, &format!("/imports/{}", Uuid::new_v4()))
            .await,
        app.get(&token, "/nope").await,
        app.upload(&token, Some("k"), "insert_only", &csv_rows(5))
            .await,
        app.client
            .get(app.url("/downloads/forged"))
            .send()
            .await
            .unwrap(),
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [401, 404, 404, 413, 403]);
    for r in responses {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.status());
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert!(h.contains_key("x-request-id"));
        let body: Value = r.json().await.unwrap();
        assert!(body["code"].is_string());
    }
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_address() {
    // Every test logs in from 127.0.0.1: this one counts in a Redis of its own.
    let redis = PrivateRedis::start(None);
    let app = TestApp::spawn_with(Backend::Fs, &[("REDIS_URL", &redis.url())]).await;
    // 20 failures from one address, each on a different email (under the per-email limit).
    for i in 0..20 {
        let email = format!("{}-{i}@example.com", secret("addr"));
        assert_eq!(
            app.login(&email, "Wrong-pass-1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let fresh = format!("{}@example.com", secret("fresh"));
    app.register(&fresh, "pass12345").await;
    let r = app.login(&fresh, "pass12345").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

/// Slowloris: a client that never finishes its headers is disconnected after the header-read
/// timeout (10 s), instead of holding a connection for ever.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(Backend::Fs).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(40), conn.read(&mut buf))
        .await
        .expect("the server closes (or answers 408) within 40 s");
    assert!(closed.is_ok());
}
