//! Organizations (docs/organizations.md), through the real API binary over HTTP with the real
//! importer, Postgres, Redis and storage: one organization's customers and jobs are nobody
//! else's; members share them; invitations, removal and `SIGNUP=invitation`; reading the
//! customers back; and the upgrade of a database from before organizations.

use crate::common;
use common::{error_body, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::{path::Path, process::Stdio};
use uuid::Uuid;

const PASSWORD: &str = "pass12345";

fn fresh_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", Uuid::new_v4().simple())
}

async fn register(app: &TestApp, email: &str, invitation: Option<&str>) -> reqwest::Response {
    app.client
        .post(app.url("/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "invitation": invitation}))
        .send()
        .await
        .unwrap()
}

async fn token(app: &TestApp, email: &str) -> String {
    let r = app.login(email, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK, "login of {email}");
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// A new account in an organization of its own (open sign-up): (email, token, org id).
async fn owner(app: &TestApp) -> (String, String, i64) {
    let email = fresh_email("owner");
    let r = register(app, &email, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "owner");
    let org = body["organization"]["id"].as_i64().unwrap();
    (email.clone(), token(app, &email).await, org)
}

async fn invite(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/orgs/invitations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A member invited by `inviter`: (email, token).
async fn member(app: &TestApp, inviter: &str) -> (String, String) {
    let r = invite(app, inviter, json!({})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let inv: Value = r.json().await.unwrap();
    let email = fresh_email("member");
    let r = register(app, &email, inv["token"].as_str()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "member");
    (email.clone(), token(app, &email).await)
}

/// Uploads `csv` with `query` (`mode=…`, then other options, e.g.
/// `mode=upsert&dry_run=true`) and waits for the job's end.
async fn import(app: &TestApp, token: &str, query: &str, csv: &str) -> Value {
    let mode_and_options = query
        .strip_prefix("mode=")
        .expect("the query starts with mode=");
    let key = Uuid::new_v4().to_string();
    let r = app
        .upload(token, Some(&key), mode_and_options, csv.as_bytes())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let job: Value = r.json().await.unwrap();
    let job = app.wait_finished(token, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    job
}

/// The error codes of a finished job, from its errors.csv.
async fn error_codes(app: &TestApp, token: &str, job: &Value) -> Vec<String> {
    if job["error_rows"] == 0 {
        return vec![];
    }
    let url = app.report_url(token, job["id"].as_str().unwrap(), "").await;
    let body = app.download(&url).await;
    csv::Reader::from_reader(&body[..])
        .records()
        .map(|r| r.unwrap()[1].to_string())
        .collect()
}

/// The stored row of a customer, as text, byte for byte.
async fn stored_row(app: &TestApp, org: i64, email: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT row_to_json(c)::text FROM customers c WHERE org_id = $1 AND email = $2",
    )
    .bind(org as i32)
    .bind(email)
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stranger_can_neither_probe_nor_overwrite_another_organizations_customers() {
    let app = TestApp::spawn(Backend::Fs).await;
    let (_, alice, alice_org) = owner(&app).await;
    let secret = format!("{}@corp.example", Uuid::new_v4().simple());
    let csv = format!("email,first_name,last_name,phone,city\n{secret},Ann,Original,+100,Paris\n");
    let job = import(&app, &alice, "mode=insert_only", &csv).await;
    assert_eq!(job["inserted_rows"], 1);
    let before = stored_row(&app, alice_org, &secret).await.expect("stored");

    let (_, mallory, mallory_org) = owner(&app).await;
    assert_ne!(mallory_org, alice_org, "two open sign-ups share nothing");
    // A dry run and an insert_only: no duplicate_in_db, so nothing is learnt.
    let probe = format!("email,first_name,last_name,phone,city\n{secret},M,Stranger,,\n");
    for query in ["mode=insert_only&dry_run=true", "mode=insert_only"] {
        let job = import(&app, &mallory, query, &probe).await;
        assert_eq!(job["inserted_rows"], 1, "{query}: {job}");
        assert_eq!(job["error_rows"], 0, "{query}: {job}");
        assert!(error_codes(&app, &mallory, &job).await.is_empty());
    }
    // An upsert writes the stranger's own customer, never the other organization's row.
    let job = import(&app, &mallory, "mode=upsert", &probe).await;
    assert_eq!(
        (job["inserted_rows"].clone(), job["updated_rows"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        stored_row(&app, alice_org, &secret).await.as_deref(),
        Some(before.as_str()),
        "the other organization's row is unchanged byte for byte"
    );
    // Each reads its own.
    let mine: Value = app
        .get_json(&mallory, &format!("/customers/{secret}"))
        .await;
    assert_eq!(mine["last_name"], "Stranger");
    let theirs: Value = app.get_json(&alice, &format!("/customers/{secret}")).await;
    assert_eq!(theirs["last_name"], "Original");
    // Jobs: another organization's are 404, as unknown ones.
    let alices_job = job_of(&app, &alice).await;
    let r = app.get(&mallory, &format!("/imports/{alices_job}")).await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let list: Value = app.get_json(&mallory, "/imports").await;
    assert_eq!(list["total"], 3, "only the stranger's own jobs: {list}");
}

/// The newest job of the caller's organization.
async fn job_of(app: &TestApp, token: &str) -> String {
    let list: Value = app.get_json(token, "/imports?limit=1").await;
    list["items"][0]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn members_of_one_organization_share_customers_and_jobs() {
    let app = TestApp::spawn(Backend::Fs).await;
    let (owner_email, owner_token, _) = owner(&app).await;
    let (member_email, member_token) = member(&app, &owner_token).await;

    let shared = fresh_email("shared");
    let first = import(
        &app,
        &owner_token,
        "mode=insert_only",
        &format!("email\n{shared}\n"),
    )
    .await;
    // The member's dry run and import see the owner's customer.
    for query in ["mode=insert_only&dry_run=true", "mode=insert_only"] {
        let job = import(&app, &member_token, query, &format!("email\n{shared}\n")).await;
        assert_eq!(
            error_codes(&app, &member_token, &job).await,
            ["duplicate_in_db"],
            "{query}"
        );
    }
    // Each sees the other's jobs, which say who started them.
    let r = app
        .get(
            &member_token,
            &format!("/imports/{}", first["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["created_by"]["email"], owner_email.as_str());
    let all: Value = app.get_json(&owner_token, "/imports").await;
    assert_eq!(all["total"], 3);
    let starters: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["created_by"]["email"].as_str().unwrap())
        .collect();
    assert!(starters.contains(&member_email.as_str()), "{starters:?}");
    let mine: Value = app.get_json(&owner_token, "/imports?mine=true").await;
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0]["id"], first["id"]);
    // The status filter, alone and with `mine`; an unknown status is refused.
    let done: Value = app.get_json(&owner_token, "/imports?status=done").await;
    assert_eq!(done["total"], 3);
    let failed: Value = app.get_json(&owner_token, "/imports?status=failed").await;
    assert_eq!(
        (failed["total"].clone(), failed["items"].clone()),
        (json!(0), json!([]))
    );
    let mine_done: Value = app
        .get_json(&owner_token, "/imports?mine=true&status=done")
        .await;
    assert_eq!(mine_done["total"], 1);
    let r = app.get(&owner_token, "/imports?status=uploading").await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query".into())
    );
    // The member can cancel, retry, delete the owner's jobs like their own: delete one.
    let r = app
        .client
        .delete(app.url(&format!("/imports/{}", first["id"].as_str().unwrap())))
        .bearer_auth(&member_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // The organization as each sees it: roles for the owner only.
    let org: Value = app.get_json(&owner_token, "/orgs/current").await;
    assert_eq!(org["role"], "owner");
    assert_eq!(org["members"].as_array().unwrap().len(), 2);
    assert_eq!(org["members"][1]["role"], "member");
    let org: Value = app.get_json(&member_token, "/orgs/current").await;
    assert_eq!(org["role"], "member");
    assert_eq!(org["members"][0]["role"], Value::Null);
    // Members do not manage.
    let r = invite(&app, &member_token, json!({})).await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
}

#[tokio::test]
async fn a_removed_members_token_stops_working_at_once() {
    let app = TestApp::spawn(Backend::Fs).await;
    let (_, owner_token, _) = owner(&app).await;
    let (member_email, member_token) = member(&app, &owner_token).await;
    let job = import(
        &app,
        &member_token,
        "mode=insert_only",
        "email\nx@example.com\n",
    )
    .await;
    let org: Value = app.get_json(&owner_token, "/orgs/current").await;
    let member_id = org["members"][1]["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.get(&member_token, "/imports").await.status(),
        StatusCode::OK
    );

    let r = app
        .client
        .delete(app.url(&format!("/orgs/members/{member_id}")))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The token has not expired, and is refused now.
    let r = app.get(&member_token, "/imports").await;
    assert_eq!(error_body(r).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login(&member_email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The job stays with the organization and still names who started it.
    let kept: Value = app
        .get(
            &owner_token,
            &format!("/imports/{}", job["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["created_by"]["email"], member_email.as_str());
    let org: Value = app.get_json(&owner_token, "/orgs/current").await;
    assert_eq!(org["members"].as_array().unwrap().len(), 1);
    // The owner cannot be removed, not even by itself.
    let owner_id = org["members"][0]["id"].as_str().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/orgs/members/{owner_id}")))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(r).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    // The removed email can be invited again: a new account.
    let inv: Value = invite(&app, &owner_token, json!({"email": member_email}))
        .await
        .json()
        .await
        .unwrap();
    let r = register(&app, &member_email, inv["token"].as_str()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.unwrap();
    assert_ne!(again["id"].as_str().unwrap(), member_id);
}

#[tokio::test]
async fn invitations_are_single_use_expire_and_can_be_revoked() {
    let app = TestApp::spawn(Backend::Fs).await;
    let (_, owner_token, owner_org) = owner(&app).await;
    let inv: Value = invite(&app, &owner_token, json!({"role": "admin"}))
        .await
        .json()
        .await
        .unwrap();
    let token = inv["token"].as_str().unwrap();
    let r = register(&app, &fresh_email("first"), Some(token)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["organization"]["id"].as_i64(), Some(owner_org));
    assert_eq!(body["role"], "admin");
    let r = register(&app, &fresh_email("second"), Some(token)).await;
    assert_eq!(
        error_body(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_invitation".into()
        )
    );

    // Two sign-ups racing for one invitation: one wins.
    let inv: Value = invite(&app, &owner_token, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let token = inv["token"].as_str().unwrap();
    let (a, b) = (fresh_email("race"), fresh_email("race"));
    let (ra, rb) = tokio::join!(
        register(&app, &a, Some(token)),
        register(&app, &b, Some(token))
    );
    let mut statuses = [ra.status(), rb.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY]
    );

    // Expired (its expiry moved into the past, as time would).
    let inv: Value = invite(&app, &owner_token, json!({}))
        .await
        .json()
        .await
        .unwrap();
    sqlx::query(
        "UPDATE org_invitations SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(inv["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let r = register(&app, &fresh_email("late"), inv["token"].as_str()).await;
    assert_eq!(error_body(r).await.1, "invalid_invitation");

    // For another email.
    let inv: Value = invite(&app, &owner_token, json!({"email": "only@example.com"}))
        .await
        .json()
        .await
        .unwrap();
    let r = register(&app, &fresh_email("other"), inv["token"].as_str()).await;
    assert_eq!(error_body(r).await.1, "invalid_invitation");

    // Listed while pending, gone once revoked, then unusable.
    let list: Value = app.get_json(&owner_token, "/orgs/invitations").await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [inv["id"].as_str().unwrap()],
        "only the pending one: {list}"
    );
    assert!(
        list["items"][0].get("token").is_none(),
        "tokens are shown once"
    );
    let r = app
        .client
        .delete(app.url(&format!(
            "/orgs/invitations/{}",
            inv["id"].as_str().unwrap()
        )))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = register(&app, "only@example.com", inv["token"].as_str()).await;
    assert_eq!(error_body(r).await.1, "invalid_invitation");
    // An unknown token.
    let r = register(&app, &fresh_email("guess"), Some("inv_0000")).await;
    assert_eq!(error_body(r).await.1, "invalid_invitation");
}

#[tokio::test]
async fn with_signup_by_invitation_only_the_invited_register() {
    let app = TestApp::spawn_with(Backend::Fs, &[("SIGNUP", "invitation")]).await;
    let r = register(&app, &fresh_email("walk-in"), None).await;
    assert_eq!(
        error_body(r).await,
        (StatusCode::FORBIDDEN, "invitation_required".into())
    );
    // The first organization comes from the admin subcommand.
    let owner_email = fresh_email("first-owner");
    let mut child = std::process::Command::new(common::api_bin())
        .args([
            "create-organization",
            "--name",
            "Acme",
            "--owner-email",
            &owner_email,
        ])
        .env_clear()
        .envs(&app.vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let org_id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let owner_token = token(&app, &owner_email).await;
    let org: Value = app.get_json(&owner_token, "/orgs/current").await;
    assert_eq!(
        (org["id"].as_i64(), org["name"].as_str()),
        (Some(org_id), Some("Acme"))
    );
    assert_eq!(org["role"], "owner");
    // Invited people get in.
    let inv: Value = invite(&app, &owner_token, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let r = register(&app, &fresh_email("invited"), inv["token"].as_str()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn customers_are_read_back_by_page_one_by_one_and_as_an_export_that_imports_again() {
    let app = TestApp::spawn(Backend::Fs).await;
    let (_, token_a, _) = owner(&app).await;
    let mut csv = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..25 {
        csv.push_str(&format!(
            "c{i:02}@example.com,First {i},\"Last, {i}\",,=City\n"
        ));
    }
    csv.push_str("zed@other.example,Z,,,\n");
    let job = import(&app, &token_a, "mode=insert_only", &csv).await;
    assert_eq!(job["inserted_rows"], 26);

    // Keyset pages of 10, in email order, ending with next_after null.
    let mut emails = vec![];
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/customers?limit=10&after={a}"),
            None => "/customers?limit=10".into(),
        };
        let page: Value = app.get_json(&token_a, &path).await;
        for c in page["items"].as_array().unwrap() {
            emails.push(c["email"].as_str().unwrap().to_string());
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let mut sorted = emails.clone();
    sorted.sort();
    assert_eq!(emails, sorted);
    assert_eq!(emails.len(), 26);
    // A prefix, case-insensitive.
    let page: Value = app.get_json(&token_a, "/customers?q=C1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let page: Value = app.get_json(&token_a, "/customers?q=c_").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "_ is no wildcard"
    );
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let r = app.get(&token_a, &format!("/customers?{bad}")).await;
        assert_eq!(error_body(r).await.1, "invalid_query", "{bad}");
    }
    // One customer, with where it came from.
    let c: Value = app.get_json(&token_a, "/customers/C03@Example.com").await;
    assert_eq!(c["last_name"], "Last, 3");
    assert_eq!(c["last_import_id"], job["id"]);
    assert_eq!(c["last_import_line"], 5);
    let r = app.get(&token_a, "/customers/nobody@example.com").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The export re-imports into another organization to the same customers.
    let r = app.get(&token_a, "/customers/export").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let export = r.text().await.unwrap();
    assert!(
        export.starts_with("email,first_name,last_name,phone,city\n"),
        "{export}"
    );
    assert_eq!(export.lines().count(), 27);
    let (_, token_b, _) = owner(&app).await;
    let again = import(&app, &token_b, "mode=insert_only", &export).await;
    assert_eq!(
        (again["inserted_rows"].clone(), again["error_rows"].clone()),
        (json!(26), json!(0))
    );
    let export_b = app
        .get(&token_b, "/customers/export")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(export_b, export);
}

/// The migrations up to the one that adds organizations, applied from a copy of their files.
async fn migrate_to_before_organizations(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "20261207000015" {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    let old = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let pool = bulk_import_core::db::connect(url, 1).await.unwrap();
    old.run(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn an_installation_from_before_organizations_is_upgraded_without_losing_anything() {
    // A database at the previous schema, with users, jobs, customers and error rows.
    let url = {
        let admin = bulk_import_core::testing::required_env("DATABASE_URL");
        let name = format!("bi_test_{}", Uuid::new_v4().simple());
        let admin_db = bulk_import_core::testing::with_database(&admin, "postgres");
        let pool = bulk_import_core::db::connect(&admin_db, 1).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        bulk_import_core::testing::with_database(&admin, &name)
    };
    migrate_to_before_organizations(&url).await;
    let hash = bulk_import_api::auth::Hasher::new(1, std::time::Duration::from_secs(60))
        .hash_password(PASSWORD.into())
        .await
        .unwrap();
    let pool = bulk_import_core::db::connect(&url, 1).await.unwrap();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let (job_a, job_b) = (Uuid::new_v4(), Uuid::new_v4());
    for (i, (user, email)) in [
        (first, "old-first@example.com"),
        (second, "old-second@example.com"),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, now() - make_interval(days => $4))")
            .bind(user)
            .bind(email)
            .bind(&hash)
            .bind(10 - i as i32)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (job, user) in [(job_a, first), (job_b, second)] {
        sqlx::query(
            "INSERT INTO import_jobs (id, user_id, idempotency_key, request_fingerprint, mode, status, \
               source_object, file_name, file_size, processed_rows, inserted_rows, error_rows, \
               checkpoint_offset, finished_at) \
             VALUES ($1, $2, 'k', 'fp', 'insert_only', 'done', 'uploads/x.csv', 'old.csv', 100, 3, 2, 1, 100, now())",
        )
        .bind(job)
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO import_errors (job_id, line, code, message, email) VALUES ($1, 3, 'invalid_email', 'bad', 'bad')")
            .bind(job)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO customers (email, first_name, last_import_id, last_import_line) \
         SELECT 'old' || i || '@example.com', 'Old ' || i, $1, i FROM generate_series(1, 4) i",
    )
    .bind(job_a)
    .execute(&pool)
    .await
    .unwrap();
    let before: String = sqlx::query_scalar(
        "SELECT string_agg(row_to_json(c)::text, '|' ORDER BY email) FROM customers c",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;

    // The API migrates it at start.
    let app = TestApp::spawn_with(Backend::Fs, &[("DATABASE_URL", &url)]).await;
    let counts: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM organizations), (SELECT count(DISTINCT org_id) FROM users), \
           (SELECT count(*) FROM customers), (SELECT count(*) FROM import_errors), \
           (SELECT count(*) FROM import_jobs j JOIN users u ON u.id = j.user_id AND u.org_id = j.org_id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1, 4, 2, 2));
    // Every customer kept its values (and gained the organization).
    let after: String = sqlx::query_scalar(
        "SELECT string_agg((row_to_json(c)::jsonb - 'org_id')::text, '|' ORDER BY email) FROM customers c",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let before: Vec<Value> = before
        .split('|')
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let after: Vec<Value> = after
        .split('|')
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_eq!(before, after);
    // The oldest user owns the organization; both still log in and read their old jobs and
    // the customers they shared.
    let t1 = token(&app, "old-first@example.com").await;
    let t2 = token(&app, "old-second@example.com").await;
    let org: Value = app.get_json(&t1, "/orgs/current").await;
    assert_eq!(
        (org["name"].as_str(), org["role"].as_str()),
        (Some("default"), Some("owner"))
    );
    for (t, job) in [(&t1, job_a), (&t2, job_b)] {
        let r = app.get(t, &format!("/imports/{job}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let j: Value = r.json().await.unwrap();
        assert_eq!(
            (j["status"].as_str(), j["error_rows"].as_i64()),
            (Some("done"), Some(1))
        );
    }
    let page: Value = app.get_json(&t2, "/customers").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    // And the organization's next import sees them.
    let job = import(&app, &t2, "mode=insert_only", "email\nold1@example.com\n").await;
    assert_eq!(error_codes(&app, &t2, &job).await, ["duplicate_in_db"]);
}
