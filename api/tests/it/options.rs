//! Issue 13 over HTTP, with the real API and importer binaries: `dry_run`, `max_errors`,
//! `delimiter` and `encoding` on `POST /imports` (and their 422s), the job JSON's `dialect`,
//! `GET /imports/{id}/errors?format=rows`, and the OpenAPI document describing them.

use crate::common;
use common::{error_body, Backend, TestApp};
use reqwest::{multipart, Response, StatusCode};
use serde_json::Value;

async fn upload_query(app: &TestApp, token: &str, key: &str, query: &str, file: &[u8]) -> Response {
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(file.to_vec())
            .file_name("export.csv")
            .mime_str("text/csv")
            .unwrap(),
    );
    app.client
        .post(app.url(&format!("/imports?{query}")))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn customers(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

const RUSSIAN: &str = "Email;Имя;Фамилия;Телефон;Город\r\n\
ivan@example.ru;Иван;Петров;;Москва\r\n\
не-почта;Пётр;;;\r\n\
olga@example.ru;Ольга;;;Омск\r\n";

#[tokio::test]
async fn dry_run_then_real_run_with_overrides_and_the_dialect_in_the_job() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let (file, _, _) = encoding_rs::WINDOWS_1251.encode(RUSSIAN);
    let r = upload_query(
        &app,
        &token,
        "dry",
        "mode=insert_only&dry_run=true&delimiter=%3B&encoding=cp1251",
        &file,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["dry_run"], true);
    let id = created["id"].as_str().unwrap().to_string();
    let dry = app.wait_finished(&token, &id).await;
    assert_eq!(dry["status"], "done", "{dry}");
    assert_eq!(
        (
            &dry["processed_rows"],
            &dry["inserted_rows"],
            &dry["error_rows"]
        ),
        (&Value::from(3), &Value::from(2), &Value::from(1))
    );
    let d = &dry["dialect"];
    assert_eq!(d["delimiter"], ";");
    assert_eq!(d["encoding"], "windows-1251");
    assert_eq!(d["compression"], "none");
    assert_eq!(d["header"], "by_name");
    assert_eq!(d["columns"][1]["column"], "first_name");
    assert_eq!(d["columns"][1]["header"], "Имя");
    assert_eq!(d["columns"][1]["position"], 2);
    assert_eq!(d["warnings"], Value::Array(vec![]));
    assert_eq!(customers(&app).await, 0, "a dry run writes no customer");

    // The same key with other options is another request.
    let r = upload_query(&app, &token, "dry", "mode=insert_only", &file).await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into()
        )
    );
    // The same key, file and options: the same job.
    let r = upload_query(
        &app,
        &token,
        "dry",
        "mode=insert_only&dry_run=true&delimiter=%3B&encoding=cp1251",
        &file,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Detected without overrides, the real run reports the same.
    let r = upload_query(&app, &token, "real", "mode=insert_only", &file).await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let real = app.wait_finished(&token, &id).await;
    assert_eq!(real["dry_run"], false);
    for k in [
        "status",
        "processed_rows",
        "inserted_rows",
        "updated_rows",
        "error_rows",
        "dialect",
    ] {
        assert_eq!(real[k], dry[k], "{k}");
    }
    assert_eq!(customers(&app).await, 2);

    // The re-importable file of bad rows.
    let url = app.report_url(&token, &id, "?format=rows").await;
    let body = app.download(&url).await;
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        "email,first_name,last_name,phone,city\r\nне-почта,Пётр,,,\r\n"
    );
    let r = app
        .get(&token, &format!("/imports/{id}/errors?format=xlsx"))
        .await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_format".into())
    );
}

#[tokio::test]
async fn invalid_options_are_422_and_leave_nothing() {
    let app = TestApp::spawn(Backend::Fs).await;
    let token = app.user().await;
    for (query, code) in [
        ("dry_run=maybe", "invalid_dry_run"),
        ("max_errors=-1", "invalid_max_errors"),
        ("max_errors=ten", "invalid_max_errors"),
        ("delimiter=%3A", "invalid_delimiter"),
        ("encoding=klingon", "invalid_encoding"),
    ] {
        let r = upload_query(&app, &token, code, query, b"email\na@b.co\n").await;
        assert_eq!(
            error_body(r).await,
            (StatusCode::UNPROCESSABLE_ENTITY, code.to_string()),
            "{query}"
        );
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn max_errors_fails_the_job_with_a_report() {
    let app = TestApp::spawn_with(Backend::Fs, &[("BATCH_SIZE", "2")]).await;
    let token = app.user().await;
    let mut file = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..30 {
        file.push_str(&if i % 2 == 0 {
            format!("bad-{i},,,,\n")
        } else {
            format!("u{i}@example.com,,,,\n")
        });
    }
    let r = upload_query(&app, &token, "max", "max_errors=2", file.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait_finished(&token, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["max_errors"], 2);
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .starts_with("too_many_errors: "),
        "{job}"
    );
    assert!(job["error_rows"].as_i64().unwrap() > 2);
    assert!(job["processed_rows"].as_i64().unwrap() < 30);
    assert_eq!(job["errors_report_available"], true);
    let r = app.get(&token, &format!("/imports/{id}/errors")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_describes_the_new_parameters() {
    let app = TestApp::spawn(Backend::Fs).await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let post = names("/imports", "post");
    for p in ["mode", "dry_run", "max_errors", "delimiter", "encoding"] {
        assert!(post.contains(&p.to_string()), "{p} in {post:?}");
    }
    assert!(names("/imports/{id}/errors", "get").contains(&"format".to_string()));
    for (path, method) in [
        ("/imports/{id}/cancel", "post"),
        ("/imports/{id}/retry", "post"),
        ("/imports/{id}", "delete"),
    ] {
        assert!(
            names(path, method).contains(&"id".to_string()),
            "{method} {path}"
        );
        let codes = doc["paths"][path][method]["responses"].as_object().unwrap();
        assert!(
            codes.contains_key("409") && codes.contains_key("404"),
            "{method} {path}"
        );
    }
    let job = &doc["components"]["schemas"]["JobView"]["properties"];
    for p in ["dry_run", "max_errors", "dialect"] {
        assert!(job[p].is_object(), "JobView.{p}");
    }
    let dialect = &doc["components"]["schemas"]["DialectView"]["properties"];
    for p in [
        "delimiter",
        "encoding",
        "compression",
        "header",
        "columns",
        "warnings",
    ] {
        assert!(dialect[p].is_object(), "DialectView.{p}");
    }
}
