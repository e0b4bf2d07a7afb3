//! Harness for the API tests: the real `bulk-import-api` binary, started per test on a free
//! loopback port with its own database and storage prefix, running the real importer
//! binary as its local executor; driven over real HTTP.

#![allow(dead_code)]

pub use bulk_import_core::testing::Backend;
use bulk_import_core::{
    db, repo,
    testing::{settings_from, test_vars, TestVars},
    JobRow, Storage,
};
use reqwest::{multipart, Client, Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use uuid::Uuid;

pub struct TestApp {
    pub base: String,
    pub vars: TestVars,
    pub pool: PgPool,
    pub storage: Storage,
    pub client: Client,
    pub child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The API binary: this crate's own build of it, or — for the tests of another crate that
/// reuse this harness (`#[path]`) — the one in the same `target/<profile>/` as the test.
pub fn api_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_bulk-import-api") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("bulk-import-api");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace`",
        bin.display()
    );
    bin
}

/// The importer next to the API binary (`target/<profile>/`).
pub fn importer_bin() -> PathBuf {
    let bin = api_bin().with_file_name("bulk-import-importer");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p bulk-import-importer` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, &[]).await
    }

    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = test_vars(backend, dir.path()).await;
        let port = free_port();
        vars.insert("BIND_ADDR".into(), format!("127.0.0.1:{port}"));
        vars.insert("IMPORTER_BIN".into(), importer_bin().display().to_string());
        vars.insert(
            "JWT_SECRET".into(),
            "test-secret-that-is-long-enough-0123456789".into(),
        );
        vars.insert("RUST_LOG".into(), "info,sqlx=warn".into());
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let settings = settings_from(&vars);
        let pool = db::connect(settings.database_url(), 4).await.unwrap();
        let storage = Storage::from_settings(&settings).unwrap();
        let log = dir.path().join("api.log");
        let mut app = TestApp {
            base: format!("http://127.0.0.1:{port}"),
            vars,
            pool,
            storage,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            child: None,
            log,
            _dir: dir,
        };
        app.start().await;
        app
    }

    /// Starts (or restarts) the API process and waits until it answers.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(api_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.vars)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/health", self.base))
                .send()
                .await
            {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the API exited with {status}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the API did not start: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.client
            .post(self.url("/auth/register"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.client
            .post(self.url("/auth/token"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Registers a fresh user and returns its bearer token.
    pub async fn user(&self) -> String {
        let email = format!("u{}@example.com", Uuid::new_v4().simple());
        assert_eq!(
            self.register(&email, "pass12345").await.status(),
            StatusCode::CREATED
        );
        let body: Value = self.login(&email, "pass12345").await.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn upload(
        &self,
        token: &str,
        key: Option<&str>,
        mode: &str,
        file: &[u8],
    ) -> Response {
        let form = multipart::Form::new().part(
            "file",
            multipart::Part::bytes(file.to_vec())
                .file_name("customers.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
        let mut req = self
            .client
            .post(self.url(&format!("/imports?mode={mode}")))
            .bearer_auth(token)
            .multipart(form);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The JSON body of a GET with `token`.
    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        self.get(token, path).await.json().await.unwrap()
    }

    /// The link `GET /imports/{id}/errors{query}` answers (`query`: "" or "?format=rows").
    pub async fn report_url(&self, token: &str, id: &str, query: &str) -> String {
        let link: serde_json::Value = self
            .get(token, &format!("/imports/{id}/errors{query}"))
            .await
            .json()
            .await
            .unwrap();
        link["url"].as_str().expect("a report link").to_string()
    }

    /// The body behind a (presigned or download) link, without credentials.
    pub async fn download(&self, url: &str) -> bytes::Bytes {
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    pub async fn job(&self, id: &str) -> JobRow {
        repo::get(&self.pool, id.parse().unwrap())
            .await
            .unwrap()
            .expect("job")
    }

    /// Polls the job over HTTP until it is `done` or `failed`.
    pub async fn wait_finished(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job: Value = self
                .get(token, &format!("/imports/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if job["status"] == "done" || job["status"] == "failed" {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not finish: {job}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn csv_rows(n: usize) -> Vec<u8> {
    let mut out = String::from("email,first_name,last_name,phone,city\n");
    for i in 0..n {
        if i % 10 == 9 {
            out.push_str(&format!("bad-{i},Bad,,,\n"));
        } else {
            out.push_str(&format!("user{i}@example.com,First{i},Last{i},,City\n"));
        }
    }
    out.into_bytes()
}

/// The status and code of an error answer, checking that it is a whole problem document
/// (RFC 9457, docs/api.md#errors): its media type, `type` naming the code, `status` equal to
/// the HTTP status, `detail` and `message` the same text.
pub async fn error_body(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let media = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        body["message"].is_string(),
        "error bodies carry a message: {body}"
    );
    let code = body["code"].as_str().unwrap_or("").to_string();
    assert_eq!(media, "application/problem+json", "{body}");
    assert_eq!(
        body["type"],
        format!("urn:bulk-import:error:{code}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["detail"], body["message"], "{body}");
    assert!(body["title"].is_string(), "{body}");
    (status, code)
}
