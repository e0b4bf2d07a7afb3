//! The HTTP contract (docs/api.md) over real HTTP, with real Postgres, Redis, Garage and the
//! real importer binary behind the API's local executor.

use crate::{common, services};
use common::{csv_rows, error_body, Backend, TestApp};
use futures_util::StreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn health_ready_docs_metrics_and_headers() {
    let app = TestApp::spawn(Backend::S3).await;
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers().contains_key("x-request-id"));
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"],
        json!({"postgres": "up", "redis": "up", "storage": "up"})
    );
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/auth/register",
        "/auth/token",
        "/imports",
        "/imports/{id}",
        "/imports/{id}/errors",
        "/imports/{id}/events",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_requests_total{route=\"/health\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{route=\"/ready\""),
        "{metrics}"
    );
    assert!(metrics.contains("imports{status=\"done\"} 0"));
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(
        error_body(missing).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[tokio::test]
async fn ready_with_redis_and_storage_down_is_200_degraded() {
    // Nothing listens on port 1.
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:1"),
        ],
    )
    .await;
    // Redis and storage down degrade features; the pod still serves (Postgres is up).
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({"postgres": "up", "redis": "down", "storage": "down"})
    );
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["degraded"], json!(["redis", "storage"]));
    // Logins work without Redis (the limiter fails open).
    let email = format!("d{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(app.register(&email, "pass12345").await.status(), 201);
    assert_eq!(app.login(&email, "pass12345").await.status(), 200);
}

#[tokio::test]
async fn ready_is_503_only_without_postgres() {
    // A private Postgres, crashed once the API runs.
    let pg = services::PrivatePostgres::start();
    let db_url = pg.create_database().await;
    let app = TestApp::spawn_with(Backend::Fs, &[("DATABASE_URL", &db_url)]).await;
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["degraded"], json!([]));
    pg.crash();
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "down");
    assert_eq!(body["code"], "not_ready");
}

#[tokio::test]
async fn register_and_login() {
    let app = TestApp::spawn(Backend::Fs).await;
    let r = app.register("User@Test.com", "pass12345").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "user@test.com");
    assert!(user["id"].is_string());
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));

    assert_eq!(
        error_body(app.register("user@TEST.com", "pass12345").await).await,
        (StatusCode::CONFLICT, "email_taken".into())
    );
    assert_eq!(
        error_body(app.register("not-an-email", "pass12345").await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_email".into())
    );
    assert_eq!(
        error_body(app.register("a@b.co", "short").await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "weak_password".into())
    );
    let bad_json = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(bad_json).await,
        (StatusCode::BAD_REQUEST, "malformed_json".into())
    );
    let missing = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({"email": "a@b.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(missing).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body".into())
    );
    let wrong_type = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({"email": 5, "password": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(wrong_type).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body".into())
    );
    let text = app
        .client
        .post(app.url("/auth/register"))
        .body("email=a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(text).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );

    let r = app.login(" USER@test.com", "pass12345").await;
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 3600);
    // The OAuth2 password form (Swagger UI's Authorize button).
    let form = app
        .client
        .post(app.url("/auth/token"))
        .form(&[
            ("username", "user@test.com"),
            ("password", "pass12345"),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(
        error_body(app.login("user@test.com", "wrong-pass1").await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_eq!(
        error_body(app.login("nobody@test.com", "pass12345").await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
}

#[tokio::test]
async fn repeated_failed_logins_are_rate_limited() {
    let app = TestApp::spawn(Backend::Fs).await;
    let email = format!("rl{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email, "pass12345").await;
    for _ in 0..5 {
        assert_eq!(
            app.login(&email, "wrong-pass1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = app.login(&email, "pass12345").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900);
    assert_eq!(error_body(r).await.1, "too_many_attempts");
}

fn token_with(header: Header, claims: Value, secret: &str) -> String {
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let app = TestApp::spawn(Backend::Fs).await;
    let good = app.user().await;
    assert_eq!(app.get(&good, "/imports").await.status(), 200);
    let (sub, org): (String, i32) = sqlx::query_as("SELECT id::text, org_id FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let secret = app.vars["JWT_SECRET"].clone();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "org": org, "iat": now, "exp": now + 600});
    let b64 = |v: &Value| {
        use std::fmt::Write;
        // base64url without padding, by hand to avoid a dependency just for this.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = serde_json::to_vec(v).unwrap();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char)
                    .unwrap();
            }
        }
        out
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let forged = token_with(
        Header::default(),
        claims.clone(),
        "another-secret-another-secret-123",
    );
    let wrong_alg = token_with(
        Header::new(jsonwebtoken::Algorithm::HS512),
        claims.clone(),
        &secret,
    );
    let expired = token_with(
        Header::default(),
        json!({"sub": sub, "org": org, "iat": now - 7200, "exp": now - 3600}),
        &secret,
    );
    let valid_by_hand = token_with(Header::default(), claims, &secret);
    assert_eq!(
        app.get(&valid_by_hand, "/imports").await.status(),
        200,
        "the hand-made token is otherwise valid"
    );
    for (what, token) in [
        ("alg none", alg_none),
        ("forged", forged),
        ("wrong alg", wrong_alg),
        ("expired", expired),
        (
            "another organization",
            token_with(
                Header::default(),
                json!({"sub": sub, "org": org + 1, "iat": now, "exp": now + 600}),
                &secret,
            ),
        ),
        ("garbage", "x.y.z".into()),
    ] {
        let r = app.get(&token, "/imports").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let none = app.client.get(app.url("/imports")).send().await.unwrap();
    assert_eq!(
        error_body(none).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
}

/// The seed service's flow: register → token → upload → processing with growing
/// processed_rows → done → errors URL → download with a plain client.
async fn seed_flow(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("IMPORT_SLOW_MS", "2"), ("BATCH_SIZE", "20")]).await;
    let token = app.user().await;
    let file = csv_rows(600);
    let r = app
        .upload(&token, Some("demo-1"), "insert_only", &file)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["file_name"], "customers.csv");
    assert_eq!(job["file_size"], file.len());
    assert_eq!(job["mode"], "insert_only");

    // Not finished yet: no report.
    let early = app.get(&token, &format!("/imports/{id}/errors")).await;
    assert_eq!(
        error_body(early).await,
        (StatusCode::CONFLICT, "report_not_ready".into())
    );

    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let job: Value = app
            .get(&token, &format!("/imports/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if job["status"] == "processing" {
            let n = job["processed_rows"].as_i64().unwrap();
            if seen.last() != Some(&n) {
                seen.push(n);
            }
        }
        if job["status"] == "done" {
            break job;
        }
        assert!(Instant::now() < deadline, "not done: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        seen.iter().filter(|&&n| n > 0 && n < 600).count() >= 3,
        "processed_rows grew while processing: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(done["processed_rows"], 600);
    assert_eq!(done["inserted_rows"], 540);
    assert_eq!(done["error_rows"], 60);
    assert_eq!(done["progress_percent"], 100.0);
    assert_eq!(done["errors_report_available"], true);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    let link: Value = app
        .get(&token, &format!("/imports/{id}/errors"))
        .await
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap();
    // A plain client, no credentials.
    let report = reqwest::get(url).await.unwrap();
    assert_eq!(report.status(), 200, "{url}");
    let text = report.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "line,code,message,email,first_name,last_name,phone,city"
    );
    assert_eq!(lines.len(), 61);
    assert_eq!(
        lines[1],
        "11,invalid_email,\"\"\"bad-9\"\" is not a valid email address\",bad-9,Bad,,,"
    );
    assert!(lines[60].starts_with("601,invalid_email,"));
}

#[tokio::test]
async fn seed_flow_s3() {
    seed_flow(Backend::S3).await;
}

#[tokio::test]
async fn seed_flow_fs() {
    seed_flow(Backend::Fs).await;
}

#[tokio::test]
async fn upload_rules_and_idempotency() {
    let app = TestApp::spawn_with(Backend::S3, &[("MAX_UPLOAD_BYTES", "4096")]).await;
    let token = app.user().await;
    let file = csv_rows(20);
    let first = app.upload(&token, Some("k-1"), "upsert", &file).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()[reqwest::header::LOCATION].clone();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/imports/{}", first["id"].as_str().unwrap())
    );
    let again = app.upload(&token, Some("k-1"), "upsert", &file).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()[reqwest::header::LOCATION], location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other_file = app
        .upload(&token, Some("k-1"), "upsert", &csv_rows(21))
        .await;
    assert_eq!(
        error_body(other_file).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into()
        )
    );
    let other_mode = app.upload(&token, Some("k-1"), "insert_only", &file).await;
    assert_eq!(
        error_body(other_mode).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into()
        )
    );
    // Keys are per user: another user's "k-1" is a new job.
    let other_user = app.user().await;
    let theirs = app.upload(&other_user, Some("k-1"), "upsert", &file).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.unwrap();

    assert_eq!(
        error_body(app.upload(&token, None, "upsert", &file).await).await,
        (StatusCode::BAD_REQUEST, "missing_idempotency_key".into())
    );
    assert_eq!(
        error_body(app.upload(&token, Some("  "), "upsert", &file).await).await,
        (StatusCode::BAD_REQUEST, "missing_idempotency_key".into())
    );
    assert_eq!(
        error_body(app.upload(&token, Some("k-2"), "merge", &file).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_mode".into())
    );
    let no_file = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k-3")
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(no_file).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "missing_file".into())
    );
    let not_multipart = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k-4")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(not_multipart).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_multipart".into())
    );
    let anonymous = app
        .client
        .post(app.url("/imports"))
        .header("Idempotency-Key", "k-5")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Over MAX_UPLOAD_BYTES: 413, the key is free again and nothing is left in storage.
    // Both jobs write their reports when they end: let them end before comparing listings.
    app.wait_finished(&token, first["id"].as_str().unwrap())
        .await;
    app.wait_finished(&other_user, theirs["id"].as_str().unwrap())
        .await;
    let before = app.storage.list("").await.unwrap();
    let big = csv_rows(200);
    assert!(big.len() > 4096);
    assert_eq!(
        error_body(app.upload(&token, Some("k-big"), "upsert", &big).await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large".into())
    );
    assert_eq!(
        app.storage.list("").await.unwrap(),
        before,
        "no object left behind"
    );
    let reserved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM import_jobs WHERE status = 'uploading'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(reserved, 0);
    assert_eq!(
        app.upload(&token, Some("k-big"), "upsert", &file)
            .await
            .status(),
        StatusCode::CREATED
    );
    app.wait_finished(&token, first["id"].as_str().unwrap())
        .await;
}

#[tokio::test]
async fn a_413_mid_stream_without_content_length_leaves_nothing() {
    // A chunked body (no Content-Length) is cut when it passes the limit.
    let app = TestApp::spawn_with(Backend::S3, &[("MAX_UPLOAD_BYTES", "100000")]).await;
    let token = app.user().await;
    let chunks = (0..100)
        .map(|i| Ok::<_, std::io::Error>(format!("user{i}@example.com,{},,,\n", "x".repeat(2000))));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let part = reqwest::multipart::Part::stream(body).file_name("big.csv");
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
        (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large".into())
    );
    assert!(app.storage.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn twenty_concurrent_posts_with_one_key_make_one_job() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let file = csv_rows(20_000); // ~0.8 MB, so that the uploads overlap
    let requests = (0..20).map(|_| app.upload(&token, Some("same-key"), "insert_only", &file));
    let responses = futures_util::future::join_all(requests).await;
    let mut created = vec![];
    let mut ids = std::collections::HashSet::new();
    for r in responses {
        match r.status() {
            StatusCode::CREATED | StatusCode::OK => {
                let status = r.status();
                let job: Value = r.json().await.unwrap();
                ids.insert(job["id"].as_str().unwrap().to_string());
                if status == StatusCode::CREATED {
                    created.push(job);
                }
            }
            StatusCode::CONFLICT => assert_eq!(error_body(r).await.1, "upload_in_progress"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one 201");
    assert_eq!(ids.len(), 1, "every 200 names the same job");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    let id = created[0]["id"].as_str().unwrap();
    let done = app.wait_finished(&token, id).await;
    assert_eq!(done["processed_rows"], 20_000);
}

#[tokio::test]
async fn other_users_get_404_everywhere() {
    let app = TestApp::spawn(Backend::Fs).await;
    let alice = app.user().await;
    let bob = app.user().await;
    let job: Value = app
        .upload(&alice, Some("a"), "insert_only", &csv_rows(10))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    app.wait_finished(&alice, id).await;
    for path in [
        format!("/imports/{id}"),
        format!("/imports/{id}/errors"),
        format!("/imports/{id}/events"),
    ] {
        assert_eq!(
            error_body(app.get(&bob, &path).await).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path}"
        );
        assert_eq!(
            app.get(&alice, &path).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&alice, &format!("/imports/{unknown}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&alice, "/imports/not-a-uuid").await.status(),
        StatusCode::NOT_FOUND
    );
    let bobs: Value = app.get(&bob, "/imports").await.json().await.unwrap();
    assert_eq!(bobs["total"], 0);
}

#[tokio::test]
async fn listing_is_newest_first_and_paginated() {
    let app = TestApp::spawn(Backend::Fs).await;
    let token = app.user().await;
    let mut ids = vec![];
    for i in 0..3 {
        let job: Value = app
            .upload(
                &token,
                Some(&format!("key-{i}")),
                "insert_only",
                &csv_rows(2 + i),
            )
            .await
            .json()
            .await
            .unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let page: Value = app
        .get(&token, "/imports?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    let got: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    let rest: Value = app
        .get(&token, "/imports?limit=2&offset=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["id"], ids[0].as_str());
    assert_eq!(
        error_body(app.get(&token, "/imports?limit=0").await)
            .await
            .1,
        "invalid_query"
    );
}

#[tokio::test]
async fn report_states_and_presigned_urls_for_the_public_endpoint() {
    // Clients reach the store as localhost:3900; the API talks to 127.0.0.1:3900.
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("S3_PUBLIC_ENDPOINT_URL", "http://localhost:3900"),
            ("S3_PRESIGN_TTL_SECONDS", "120"),
        ],
    )
    .await;
    let token = app.user().await;
    let clean: Value = app
        .upload(
            &token,
            Some("clean"),
            "insert_only",
            b"email,a,b,c,d\nok@x.co,,,,\n",
        )
        .await
        .json()
        .await
        .unwrap();
    let id = clean["id"].as_str().unwrap();
    let done = app.wait_finished(&token, id).await;
    assert_eq!(done["errors_report_available"], false);
    assert_eq!(
        error_body(app.get(&token, &format!("/imports/{id}/errors")).await).await,
        (StatusCode::NOT_FOUND, "no_errors".into())
    );

    let dirty: Value = app
        .upload(&token, Some("dirty"), "insert_only", &csv_rows(10))
        .await
        .json()
        .await
        .unwrap();
    let dirty_id = dirty["id"].as_str().unwrap();
    app.wait_finished(&token, dirty_id).await;
    let link: Value = app
        .get(&token, &format!("/imports/{dirty_id}/errors"))
        .await
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://localhost:3900/"),
        "signed for S3_PUBLIC_ENDPOINT_URL: {url}"
    );
    assert!(url.contains("X-Amz-Expires=120"), "{url}");
    assert_eq!(link["expires_in"], 120);
    let report = reqwest::get(url).await.unwrap();
    assert_eq!(report.status(), 200);
    assert!(report.text().await.unwrap().contains("11,invalid_email"));
    // Tampering with the signed URL is refused by the store.
    let tampered = url.replace("X-Amz-Expires=120", "X-Amz-Expires=99999");
    assert_eq!(
        reqwest::get(&tampered).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // A failed job has no report.
    sqlx::query("UPDATE import_jobs SET status = 'failed', error = 'boom', report_object = NULL WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        error_body(app.get(&token, &format!("/imports/{id}/errors")).await).await,
        (StatusCode::NOT_FOUND, "no_report".into())
    );
}

#[tokio::test]
async fn fs_download_links_are_signed_and_expire() {
    let app = TestApp::spawn_with(Backend::Fs, &[("S3_PRESIGN_TTL_SECONDS", "1")]).await;
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("x"), "insert_only", &csv_rows(10))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    app.wait_finished(&token, id).await;
    let link: Value = app
        .get(&token, &format!("/imports/{id}/errors"))
        .await
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/downloads/", app.base)));
    let forged = format!("{}x", url);
    assert_eq!(
        reqwest::get(&forged).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // The access token is not a download token either.
    assert_eq!(
        reqwest::get(app.url(&format!("/downloads/{token}")))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // Expiry is checked to the second: poll until the link is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(&url).await.unwrap().status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(Instant::now() < deadline, "the link never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_stream_progress_until_done() {
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("IMPORT_SLOW_MS", "2"),
            ("BATCH_SIZE", "20"),
            ("PROGRESS_EVERY", "20"),
        ],
    )
    .await;
    sse_until_done(&app).await;
}

#[tokio::test]
async fn events_fall_back_to_polling_without_redis() {
    let app = TestApp::spawn_with(
        Backend::Fs,
        &[
            ("IMPORT_SLOW_MS", "10"),
            ("BATCH_SIZE", "20"),
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
        ],
    )
    .await;
    sse_until_done(&app).await;
}

async fn sse_until_done(app: &TestApp) {
    let token = app.user().await;
    let job: Value = app
        .upload(&token, Some("sse"), "insert_only", &csv_rows(300))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let r = app.get(&token, &format!("/imports/{id}/events")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The stream ends by itself when the job ends.
    while let Some(chunk) = tokio::time::timeout(deadline - Instant::now(), body.next())
        .await
        .expect("stream ends in time")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let snapshots: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.contains("event: progress"));
    let last = snapshots.last().unwrap();
    assert_eq!(last["status"], "done");
    assert_eq!(last["processed_rows"], 300);
    let during: Vec<i64> = snapshots
        .iter()
        .filter(|s| s["status"] == "processing")
        .map(|s| s["processed_rows"].as_i64().unwrap())
        .collect();
    assert!(during.len() >= 2, "several progress events: {during:?}");
}

#[tokio::test]
async fn same_key_while_the_first_upload_streams_gets_409() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    // The first upload sends its header row, then waits until we let it finish.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let head = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"email,first_name,last_name,phone,city\n",
        ))
    });
    let tail = futures_util::stream::once(async move {
        released.await.ok();
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"late@example.com,L,,,\n"))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(head.chain(tail)))
        .file_name("slow.csv");
    let first = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "slow-key")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send();
    let first = tokio::spawn(first);
    // The reservation exists once the first request is streaming.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM import_jobs WHERE status = 'uploading'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the first upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = app
        .upload(
            &token,
            Some("slow-key"),
            "insert_only",
            b"email,a,b,c,d\nx@y.co,,,,\n",
        )
        .await;
    assert_eq!(
        error_body(second).await,
        (StatusCode::CONFLICT, "upload_in_progress".into())
    );
    release.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let job: Value = first.json().await.unwrap();
    assert_eq!(
        app.wait_finished(&token, job["id"].as_str().unwrap()).await["inserted_rows"],
        1
    );
}

#[tokio::test]
async fn a_stalled_upload_is_cut_with_408_and_releases_its_key() {
    let app = TestApp::spawn_with(Backend::S3, &[("UPLOAD_IDLE_TIMEOUT_SECONDS", "1")]).await;
    let token = app.user().await;
    let (_never, stalled) = tokio::sync::oneshot::channel::<()>();
    let head = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"email,first_name,last_name,phone,city\n",
        ))
    });
    let tail = futures_util::stream::once(async move {
        stalled.await.ok();
        Ok::<_, std::io::Error>(bytes::Bytes::new())
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(head.chain(tail)))
        .file_name("stalled.csv");
    let r = app
        .client
        .post(app.url("/imports"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "stalled")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(r).await,
        (StatusCode::REQUEST_TIMEOUT, "upload_timeout".into())
    );
    let reserved: i64 = sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reserved, 0, "the key is free again");
    assert!(
        app.storage.list("").await.unwrap().is_empty(),
        "nothing half-written"
    );
    assert_eq!(
        app.upload(&token, Some("stalled"), "insert_only", &csv_rows(3))
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// One access-log line per request at `info`: method, route template, status, duration and
/// request id; a download link's token never reaches the log.
#[tokio::test]
async fn one_access_log_line_per_request() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());
    let unknown = uuid::Uuid::new_v4();
    let r = app
        .client
        .get(app.url(&format!("/imports/{unknown}")))
        .bearer_auth(&token)
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], request_id.as_str());
    let secret = format!("secret{}", uuid::Uuid::new_v4().simple());
    let r = app
        .client
        .get(app.url(&format!("/downloads/{secret}")))
        .send()
        .await
        .unwrap();
    let download_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(10);
    let (lines, logs) = loop {
        let logs = strip_ansi(&app.logs());
        let lines: Vec<String> = logs
            .lines()
            .filter(|l| l.contains(" access: ") && l.contains(&format!("request_id={request_id}")))
            .map(str::to_string)
            .collect();
        let download_logged = logs
            .lines()
            .any(|l| l.contains(" access: ") && l.contains(&format!("request_id={download_id}")));
        if !lines.is_empty() && download_logged {
            break (lines, logs);
        }
        assert!(Instant::now() < deadline, "no access line:\n{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains(" INFO "), "{line}");
    for field in [
        "method=GET",
        "route=/imports/{id}",
        "status=404",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        logs.contains("route=/downloads/{token}"),
        "download route logged:\n{logs}"
    );
    assert!(
        !logs.contains(&secret),
        "a download token in the log:\n{logs}"
    );
}

/// The upload operation's request body is a multipart form whose `file` is binary: the
/// Swagger UI shows a file picker for it.
#[tokio::test]
async fn the_openapi_upload_has_a_file_field() {
    let app = TestApp::spawn(Backend::S3).await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut schema = spec["paths"]["/imports"]["post"]["requestBody"]["content"]
        ["multipart/form-data"]["schema"]
        .clone();
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        schema = spec["components"]["schemas"][name].clone();
    }
    assert_eq!(schema["type"], "object", "{schema}");
    assert_eq!(schema["properties"]["file"]["type"], "string", "{schema}");
    assert_eq!(schema["properties"]["file"]["format"], "binary", "{schema}");
    assert_eq!(schema["required"], json!(["file"]), "{schema}");
}

/// The log without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /imports/{id}/errors?format=json`: the bad rows a page at a time by line, with their
/// code, message and values as read; the organization's jobs only.
#[tokio::test]
async fn bad_rows_as_json_pages() {
    let app = TestApp::spawn(Backend::Fs).await;
    let token = app.user().await;
    let file = b"email,first_name,last_name,phone,city\n\
        a@example.com,Ann,A,1,X\n\
        not-an-email,Bob,B,2,Y\n\
        b@example.com,Cat,C,3,Z\n\
        a@example.com,Dup,D,4,W\n\
        ,Eve,E,5,V\n";
    let job: Value = app
        .upload(&token, Some("json-errors"), "insert_only", file)
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let done = app.wait_finished(&token, &id).await;
    assert_eq!(done["error_rows"], 3, "{done}");

    let path = format!("/imports/{id}/errors?format=json&limit=2");
    let first = app.get_json(&token, &path).await;
    assert_eq!(first["error_rows"], 3);
    let lines: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [3, 5]);
    assert_eq!(first["items"][0]["values"]["email"], "not-an-email");
    assert_eq!(first["items"][0]["values"]["first_name"], "Bob");
    assert!(first["items"][0]["code"].is_string() && first["items"][0]["message"].is_string());
    assert_eq!(first["items"][1]["code"], "duplicate_in_file");
    assert_eq!(first["next_after"], 5);
    let second = app.get_json(&token, &format!("{path}&after=5")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["line"], 6);
    assert_eq!(second["next_after"], Value::Null);

    for bad in ["limit=0", "limit=1001", "after=-1", "after=x"] {
        let r = app
            .get(&token, &format!("/imports/{id}/errors?format=json&{bad}"))
            .await;
        assert_eq!(
            error_body(r).await,
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query".into()),
            "{bad}"
        );
    }
    let stranger = app.user().await;
    let r = app
        .get(&stranger, &format!("/imports/{id}/errors?format=json"))
        .await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}
