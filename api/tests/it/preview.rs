//! Issue 26 over HTTP, with the real API and importer binaries: `POST /imports/preview`
//! (the dialect, the mapping of each header, the first rows and their checks, from the first
//! 64 KiB; nothing written) and the explicit mapping `columns=` of `POST /imports` (it wins
//! over detection, reaches the importer, is part of the idempotency fingerprint, and is
//! refused with 422 `invalid_columns` when it cannot be applied).

use crate::common;
use common::{error_body, Backend, TestApp};
use reqwest::{multipart, Response, StatusCode};
use serde_json::{json, Value};

/// The file of the issue: windows-1251, `;`, a header the service partly does not know.
const EXPORT: &str = "E-mail Address;Given Name;Family Name;Mobile Number\r\n\
Ivan@Example.ru;Иван;Петров;+7 900 000-00-01\r\n\
не-почта;Пётр;Сидоров;+7 900 000-00-02\r\n\
olga@example.ru;Ольга;Иванова;+7 900 000-00-03\r\n";

const MAPPING: &str =
    "email:E-mail Address,first_name:Given Name,last_name:Family Name,phone:Mobile Number";

fn cp1251(text: &str) -> Vec<u8> {
    encoding_rs::WINDOWS_1251.encode(text).0.into_owned()
}

fn form(file: &[u8]) -> multipart::Form {
    multipart::Form::new().part(
        "file",
        multipart::Part::bytes(file.to_vec())
            .file_name("export.csv")
            .mime_str("text/csv")
            .unwrap(),
    )
}

fn query_of(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn preview(app: &TestApp, token: &str, query: &[(&str, &str)], file: &[u8]) -> Response {
    app.client
        .post(app.url(&format!("/imports/preview?{}", query_of(query))))
        .bearer_auth(token)
        .multipart(form(file))
        .send()
        .await
        .unwrap()
}

async fn upload(
    app: &TestApp,
    token: &str,
    key: &str,
    query: &[(&str, &str)],
    file: &[u8],
) -> Response {
    app.client
        .post(app.url(&format!("/imports?{}", query_of(query))))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .multipart(form(file))
        .send()
        .await
        .unwrap()
}

async fn job_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Nothing of a preview is kept: no job row, no object in storage.
async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(job_rows(app).await, 0, "a preview makes no job");
    assert_eq!(
        app.storage.list("").await.unwrap(),
        Vec::<String>::new(),
        "a preview stores no object"
    );
}

#[tokio::test]
async fn a_windows_1251_export_previews_with_its_dialect_mapping_and_rows() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let file = cp1251(EXPORT);
    let r = preview(&app, &token, &[], &file).await;
    assert_eq!(r.status(), StatusCode::OK);
    let p: Value = r.json().await.unwrap();
    let d = &p["dialect"];
    assert_eq!(
        (&d["delimiter"], &d["encoding"]),
        (&json!(";"), &json!("windows-1251"))
    );
    assert_eq!(
        (&d["compression"], &d["header"]),
        (&json!("none"), &json!("by_name"))
    );
    assert_eq!(
        p["mapping"],
        json!([
            {"header": "E-mail Address", "position": 0, "column": "email"},
            {"header": "Given Name", "position": 1, "column": "first_name"},
            {"header": "Family Name", "position": 2, "column": "last_name"},
            {"header": "Mobile Number", "position": 3, "column": null},
        ])
    );
    assert!(
        d["warnings"][0].as_str().unwrap().contains("Mobile Number"),
        "{d}"
    );
    let rows = p["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({"line": 2, "values": {"email": "ivan@example.ru", "first_name": "Иван",
               "last_name": "Петров", "phone": null, "city": null},
               "valid": true, "errors": []})
    );
    assert_eq!(rows[1]["line"], 3);
    assert_eq!(rows[1]["valid"], false);
    assert_eq!(rows[1]["errors"][0]["code"], "invalid_email");
    assert_eq!(rows[1]["values"]["email"], "не-почта");
    assert_eq!(p["truncated"], false);
    assert_nothing_written(&app).await;

    // Authentication as for an upload.
    let r = app
        .client
        .post(app.url("/imports/preview"))
        .multipart(form(&file))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(r).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_file_larger_than_the_sample_previews_from_its_head() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    // About 4 MiB: the head is read, the rest discarded.
    let mut file = b"email,first_name,last_name,phone,city\n".to_vec();
    let mut n = 0;
    while file.len() < 4 * 1024 * 1024 {
        n += 1;
        file.extend(format!("user{n}@example.com,First{n},Last{n},,City\n").bytes());
    }
    let r = preview(&app, &token, &[], &file).await;
    let status = r.status();
    let p: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{p}");
    let rows = p["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[19]["values"]["email"], "user20@example.com");
    assert!(rows.iter().all(|r| r["valid"] == true));
    assert_eq!(p["truncated"], true);
    assert_eq!(p["dialect"]["header"], "by_name");
    assert_nothing_written(&app).await;
    // The connection is still good for the next request.
    let again = preview(&app, &token, &[("delimiter", ",")], &file[..1000]).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn an_explicit_mapping_wins_over_detection_and_reaches_the_importer() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let file = cp1251(EXPORT);
    let p: Value = preview(&app, &token, &[("columns", MAPPING)], &file)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["dialect"]["header"], "explicit");
    assert_eq!(p["mapping"][3]["column"], "phone");
    assert_eq!(p["rows"][0]["values"]["phone"], "+7 900 000-00-01");

    let r = upload(&app, &token, "mapped", &[("columns", MAPPING)], &file).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait_finished(&token, &id).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        (&job["inserted_rows"], &job["error_rows"]),
        (&json!(2), &json!(1))
    );
    let d = &job["dialect"];
    assert_eq!(d["header"], "explicit");
    assert_eq!(
        d["columns"][3],
        json!({"column": "phone", "header": "Mobile Number", "position": 4})
    );
    let phones: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT email, first_name, phone FROM customers ORDER BY email")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        phones,
        [
            (
                "ivan@example.ru".into(),
                Some("Иван".into()),
                Some("+7 900 000-00-01".into())
            ),
            (
                "olga@example.ru".into(),
                Some("Ольга".into()),
                Some("+7 900 000-00-03".into())
            ),
        ]
    );

    // Columns not named are not imported.
    let r = upload(
        &app,
        &token,
        "email-only",
        &[("columns", "email:E-mail Address"), ("mode", "upsert")],
        &file,
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait_finished(&token, &id).await;
    assert_eq!(
        job["dialect"]["columns"].as_array().unwrap().len(),
        1,
        "{job}"
    );
    let names: Vec<Option<String>> = sqlx::query_scalar("SELECT first_name FROM customers")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        names,
        [None, None],
        "an upsert of unmapped columns clears them"
    );
}

#[tokio::test]
async fn the_mapping_is_part_of_the_idempotency_fingerprint() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let file = cp1251(EXPORT);
    let r = upload(&app, &token, "k", &[("columns", MAPPING)], &file).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"].clone();
    // Another mapping, or none, with the same key and file: another request.
    for other in [
        vec![("columns", "email:E-mail Address,phone:Mobile Number")],
        vec![],
    ] {
        let r = upload(&app, &token, "k", &other, &file).await;
        assert_eq!(
            error_body(r).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused".into()
            ),
            "{other:?}"
        );
    }
    // The same mapping, spelled as a JSON object in another order: the same job.
    let same = json!({"phone": "Mobile Number", "last_name": "Family Name",
                      "first_name": "Given Name", "email": "E-mail Address"})
    .to_string();
    let r = upload(&app, &token, "k", &[("columns", &same)], &file).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], id);
    assert_eq!(job_rows(&app).await, 1);
}

#[tokio::test]
async fn mappings_that_cannot_be_applied_are_422_and_leave_nothing() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let file = cp1251(EXPORT);
    let cases = [
        ("mail:E-mail Address", "unknown column"),
        ("email:E-mail Address,email:Given Name", "mapped twice"),
        ("email:E-mail Address,phone:E-mail Address", "mapped twice"),
        ("phone:Mobile Number", "no email"),
        ("email E-mail Address", "not column:header"),
        ("email:Courriel", "not a header of the file"),
    ];
    for (columns, says) in cases {
        for route in ["/imports", "/imports/preview"] {
            let r = app
                .client
                .post(app.url(&format!("{route}?{}", query_of(&[("columns", columns)]))))
                .bearer_auth(&token)
                .header("Idempotency-Key", "bad")
                .multipart(form(&file))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_columns"),
                "{route} {columns}: {body}"
            );
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(says), "{route} {columns}: {message}");
        }
    }
    // The refused upload left no job and no object, and its key is free again.
    assert_nothing_written(&app).await;
    let r = upload(&app, &token, "bad", &[("columns", MAPPING)], &file).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Without a mapping, a recognised header without an email column.
    let r = preview(&app, &token, &[], b"Name;Phone\nAnn;+47\n").await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_email_column".into()
        )
    );
    // The other options are checked as for an upload.
    let r = preview(&app, &token, &[("delimiter", "::")], &file).await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_delimiter".into())
    );
}
