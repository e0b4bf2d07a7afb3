//! Issue 25, point 5: `POST /imports` with a JSON body imports an object already in storage
//! under the organization's import prefixes (`orgs/<id>/inbox/` by default): counts like an
//! upload, the Idempotency-Key's replay, refusals (outside the prefixes, another
//! organization's prefix, the service's own uploads, a missing object), the prefixes set by
//! an owner, and the object never deleted by the service.

use crate::common;
use common::{csv_rows, error_body, Backend, TestApp};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

async fn org_of(app: &TestApp, token: &str) -> i64 {
    app.get_json(token, "/orgs/current").await["id"]
        .as_i64()
        .expect("organization id")
}

async fn put(app: &TestApp, key: &str, body: &[u8]) {
    app.storage
        .put_stream(key, std::io::Cursor::new(body.to_vec()))
        .await
        .unwrap();
}

async fn import(app: &TestApp, token: &str, idem: &str, body: Value) -> Response {
    app.client
        .post(app.url("/imports"))
        .bearer_auth(token)
        .header("Idempotency-Key", idem)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_under_the_inbox_is_imported_replayed_and_never_deleted() {
    let app = TestApp::spawn(Backend::S3).await;
    let token = app.user().await;
    let org = org_of(&app, &token).await;
    let prefixes = app.get_json(&token, "/orgs/current/import-prefixes").await;
    assert_eq!(
        prefixes,
        json!({"prefixes": [format!("orgs/{org}/inbox/")]})
    );
    let key = format!("orgs/{org}/inbox/customers.csv");
    let file = csv_rows(200);
    put(&app, &key, &file).await;

    let body = json!({"source": {"key": key}, "mode": "insert_only"});
    let r = import(&app, &token, "from-storage", body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", app.logs());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/imports/{id}"));
    assert_eq!(job["file_name"], "customers.csv");
    assert_eq!(job["file_size"], file.len() as u64, "{job}");

    let done = app.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        (
            &done["processed_rows"],
            &done["inserted_rows"],
            &done["error_rows"]
        ),
        (&json!(200), &json!(180), &json!(20)),
        "{done}"
    );
    assert_eq!(app.job(&id).await.source_object, key);

    // The same key and body: the same job. Another mode with it: 422.
    let r = import(&app, &token, "from-storage", body).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], id.as_str());
    let other = json!({"source": {"key": key}, "mode": "upsert"});
    let r = import(&app, &token, "from-storage", other).await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into()
        )
    );

    // The object is not the service's: it stays after the job, and after the job's deletion.
    assert_eq!(app.storage.size(&key).await.unwrap(), file.len() as u64);
    let r = app
        .client
        .delete(app.url(&format!("/imports/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.storage.size(&key).await.unwrap(), file.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_prefixes_and_missing_objects_are_refused() {
    let app = TestApp::spawn(Backend::S3).await;
    let (token, stranger) = (app.user().await, app.user().await);
    let (org, other) = (org_of(&app, &token).await, org_of(&app, &stranger).await);
    assert_ne!(org, other);
    // The stranger's object in the stranger's own inbox, and one of the service's uploads.
    let theirs = format!("orgs/{other}/inbox/customers.csv");
    put(&app, &theirs, &csv_rows(5)).await;
    let r = app
        .upload(&stranger, Some("up"), "insert_only", &csv_rows(5))
        .await;
    let upload: Value = r.json().await.unwrap();
    let their_upload = app.job(upload["id"].as_str().unwrap()).await.source_object;
    let outside = format!("orgs/{org}/elsewhere/customers.csv");
    put(&app, &outside, &csv_rows(5)).await;
    let refused = [
        theirs.clone(),
        their_upload,
        outside,
        format!("orgs/{org}/inbox/../../{other}/inbox/customers.csv"),
        format!("/orgs/{org}/inbox/customers.csv"),
        format!("s3://bucket/orgs/{org}/inbox/customers.csv"),
        String::new(),
    ];
    for (i, key) in refused.into_iter().enumerate() {
        let r = import(
            &app,
            &token,
            &format!("k{i}"),
            json!({"source": {"key": key}}),
        )
        .await;
        assert_eq!(
            error_body(r).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "source_not_allowed".into()
            ),
            "{key:?}"
        );
    }
    let missing = format!("orgs/{org}/inbox/none.csv");
    let r = import(&app, &token, "missing", json!({"source": {"key": missing}})).await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "source_not_found".into())
    );
    // A refused request creates no job.
    let jobs = app.get_json(&token, "/imports").await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    // The stranger's own object, by the stranger, is fine.
    let r = import(&app, &stranger, "mine", json!({"source": {"key": theirs}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sets_the_prefixes_within_the_organizations_area() {
    let app = TestApp::spawn(Backend::S3).await;
    let (token, stranger) = (app.user().await, app.user().await);
    let (org, other) = (org_of(&app, &token).await, org_of(&app, &stranger).await);
    let set = |prefixes: Value| {
        app.client
            .put(app.url("/orgs/current/import-prefixes"))
            .bearer_auth(&token)
            .json(&json!({ "prefixes": prefixes }))
            .send()
    };
    for bad in [
        json!([format!("orgs/{other}/inbox/")]),
        json!(["uploads/"]),
        json!([format!("orgs/{org}/exports")]),
        json!([format!("orgs/{org}/../{other}/")]),
    ] {
        let r = set(bad.clone()).await.unwrap();
        assert_eq!(
            error_body(r).await,
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_prefix".into()),
            "{bad}"
        );
    }
    let exports = format!("orgs/{org}/exports/");
    let r = set(json!([exports])).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let key = format!("{exports}crm.csv");
    put(&app, &key, &csv_rows(10)).await;
    let r = import(&app, &token, "exports", json!({"source": {"key": key}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The default inbox is no longer one of them.
    let inbox = format!("orgs/{org}/inbox/crm.csv");
    put(&app, &inbox, &csv_rows(10)).await;
    let r = import(&app, &token, "inbox", json!({"source": {"key": inbox}})).await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "source_not_allowed".into()
        )
    );
}
