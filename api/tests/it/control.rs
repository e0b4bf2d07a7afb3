//! Control over a job (issue 13) with the real API and importer binaries: cancel mid-file
//! (exact counters, nothing after the batch boundary), retry of a failed job after its file
//! was missing from storage (ends `done` with exact counts), delete (the objects and rows it
//! should, and no others), and the 409s.

use crate::common;
use bulk_import_core::{job::rows_report_key, storage::StorageError};
use common::{csv_rows, error_body, Backend, TestApp};
use reqwest::{multipart, Response, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn send(app: &TestApp, token: &str, method: reqwest::Method, path: &str) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn upload(app: &TestApp, token: &str, key: &str, file: &[u8]) -> String {
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(file.to_vec()).file_name("c.csv"),
    );
    let r = app
        .client
        .post(app.url("/imports?mode=insert_only"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Whether an importer process for `job_id` is running (its command line names the job).
fn importer_running(job_id: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c).contains(job_id)
                    && String::from_utf8_lossy(&c).contains("bulk-import-importer")
            })
            .unwrap_or(false)
    })
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_rows(app: &TestApp, token: &str, id: &str, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = app
            .get(token, &format!("/imports/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if job["processed_rows"].as_i64().unwrap() >= rows {
            assert_eq!(job["status"], "processing", "{job}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for rows: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counters, table and error rows agree, and no customer row lies at or after the checkpoint.
async fn assert_exact(app: &TestApp, id: &str) -> (i64, i64, i64) {
    let id: Uuid = id.parse().unwrap();
    let job = app.job(&id.to_string()).await;
    let (customers, last_line, errors): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customers WHERE last_import_id = $1), \
           (SELECT max(last_import_line) FROM customers WHERE last_import_id = $1), \
           (SELECT count(*) FROM import_errors WHERE job_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(job.processed_rows, job.inserted_rows + job.error_rows);
    assert_eq!(customers, job.inserted_rows, "no half-applied batch");
    assert_eq!(errors, job.error_rows);
    assert!(
        last_line.unwrap_or(0) < job.checkpoint_line,
        "nothing after the batch boundary"
    );
    (job.processed_rows, job.inserted_rows, job.error_rows)
}

#[tokio::test]
async fn cancel_mid_file_then_retry_a_job_whose_file_was_missing() {
    let app = TestApp::spawn_with(
        Backend::S3,
        &[
            ("IMPORT_SLOW_MS", "1"),
            ("BATCH_SIZE", "50"),
            ("LOCAL_MAX_CONCURRENT_IMPORTS", "1"),
        ],
    )
    .await;
    let token = app.user().await;
    let slow = upload(&app, &token, "slow", &csv_rows(5_000)).await;
    wait_rows(&app, &token, &slow, 300).await;

    // The second job waits for the only slot; its file goes missing meanwhile.
    // Emails of its own, so that what the cancelled job loaded does not touch its counts.
    let file = String::from_utf8(csv_rows(400))
        .unwrap()
        .replace("user", "second")
        .into_bytes();
    let second = upload(&app, &token, "second", &file).await;
    let object = app.job(&second).await.source_object;
    app.storage.delete(&object).await.unwrap();

    // A running job cannot be deleted.
    let r = send(
        &app,
        &token,
        reqwest::Method::DELETE,
        &format!("/imports/{slow}"),
    )
    .await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::CONFLICT, "job_unfinished".into())
    );

    let r = send(
        &app,
        &token,
        reqwest::Method::POST,
        &format!("/imports/{slow}/cancel"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_exact(&app, &slow).await;
    wait_until("the importer to stop", || !importer_running(&slow)).await;
    let (processed, _, _) = assert_exact(&app, &slow).await;
    assert!((300..5_000).contains(&processed), "{processed}");
    let job = app.job(&slow).await;
    assert_eq!(job.status.as_str(), "cancelled");
    let r = send(
        &app,
        &token,
        reqwest::Method::POST,
        &format!("/imports/{slow}/cancel"),
    )
    .await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::CONFLICT, "job_finished".into())
    );
    let r = send(
        &app,
        &token,
        reqwest::Method::POST,
        &format!("/imports/{slow}/retry"),
    )
    .await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::CONFLICT, "not_failed".into())
    );

    // The slot is free: the second job runs and fails on its missing file.
    let failed = app.wait_finished(&token, &second).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .starts_with("source_missing"));
    // Storage has it again; retry resumes it as a new attempt and it ends done, exactly.
    app.storage.put_stream(&object, &file[..]).await.unwrap();
    let r = send(
        &app,
        &token,
        reqwest::Method::POST,
        &format!("/imports/{second}/retry"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["error"], Value::Null);
    let done = app.wait_finished(&token, &second).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        (
            &done["processed_rows"],
            &done["inserted_rows"],
            &done["error_rows"]
        ),
        (&Value::from(400), &Value::from(360), &Value::from(40))
    );
    assert_exact(&app, &second).await;
    assert!(app.job(&second).await.attempts >= 2);
}

#[tokio::test]
async fn delete_removes_the_job_its_objects_and_error_rows_and_nothing_else() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let first = upload(&app, &token, "first", &csv_rows(50)).await;
    let other = upload(&app, &token, "other", &csv_rows(30)).await;
    for id in [&first, &other] {
        assert_eq!(app.wait_finished(&token, id).await["status"], "done");
    }
    let (a, b) = (app.job(&first).await, app.job(&other).await);
    let objects = |j: &bulk_import_core::JobRow| {
        vec![
            j.source_object.clone(),
            j.report_object.clone().unwrap(),
            rows_report_key(j.id),
        ]
    };
    for key in objects(&a).iter().chain(&objects(&b)) {
        app.storage.size(key).await.unwrap();
    }
    let customers_before: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let r = send(
        &app,
        &token,
        reqwest::Method::DELETE,
        &format!("/imports/{first}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get(&token, &format!("/imports/{first}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for key in objects(&a) {
        assert!(
            matches!(app.storage.size(&key).await, Err(StorageError::NotFound(_))),
            "{key} is gone"
        );
    }
    let errors: i64 = sqlx::query_scalar("SELECT count(*) FROM import_errors WHERE job_id = $1")
        .bind(a.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(errors, 0);
    // The other job, its objects and rows, and every customer stay.
    for key in objects(&b) {
        app.storage.size(&key).await.unwrap();
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM import_errors WHERE job_id = $1")
        .bind(b.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, b.error_rows);
    let customers_after: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(customers_after, customers_before);
    assert_eq!(
        app.get(&token, &format!("/imports/{other}")).await.status(),
        StatusCode::OK
    );

    // Gone is gone; another user's job is 404 as everywhere.
    let r = send(
        &app,
        &token,
        reqwest::Method::DELETE,
        &format!("/imports/{first}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let stranger = app.user().await;
    for (method, path) in [
        (reqwest::Method::DELETE, format!("/imports/{other}")),
        (reqwest::Method::POST, format!("/imports/{other}/cancel")),
        (reqwest::Method::POST, format!("/imports/{other}/retry")),
    ] {
        let r = send(&app, &stranger, method, &path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
