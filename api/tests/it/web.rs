//! The web page at `/` in a real headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `scripts/browser.sh` installs them and these tests run
//! it), against the real API in local mode. `WEB_SCREENSHOT=path` saves a screenshot of the
//! finished page (docs/web-page.png was made so).

use crate::common;
use base64::Engine;
use common::{Backend, TestApp};
use reqwest::Client;
use serde_json::{json, Value};
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use uuid::Uuid;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver child process.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let status = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/browser.sh"
            ))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/browser.sh failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1000,1200",
                             format!("--user-data-dir={}", profile.path().display())],
                }
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap();
        assert!(ok, "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/property/{name}"),
            None,
        )
        .await
    }

    async fn displayed(&self, css: &str) -> bool {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/displayed"),
            None,
        )
        .await
            == true
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls until `css`'s text contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if t.contains(needle) {
                return t;
            }
            let error = self.text("#error").await;
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}: {t:?}; page error: {error:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Three good rows, two bad ones.
const WITH_BAD_ROWS: &[u8] = b"email,first_name,last_name,phone,city\n\
ann@example.com,Ann,Lee,+47 555 0100,Oslo\n\
not-an-email,Bob,,,\n\
cy@example.com,Cy,,,\n\
ann@example.com,Ann,Again,,\n\
di@example.com,Di,,,Rome\n";

#[tokio::test]
async fn the_web_page_registers_uploads_shows_progress_and_the_report_and_cancels() {
    let app = TestApp::spawn_with(Backend::S3, &[("IMPORT_SLOW_MS", "10")]).await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");

    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    let email = format!("web{}@example.com", Uuid::new_v4().simple());

    // Sign up (by mouse), log out, log in by keyboard (Enter in the password field).
    browser.type_into("#email", &email).await;
    browser.type_into("#password", "pass12345").await;
    browser.click("#register").await;
    browser.wait_text("#who", &email, 30).await;
    browser.click("#logout").await;
    assert!(browser.displayed("#auth").await);
    assert_eq!(browser.property("#email", "value").await, json!(email));
    assert_eq!(browser.property("#password", "value").await, json!(""));
    browser.type_into("#password", "pass12345\u{E007}").await;
    browser.wait_text("#who", &email, 30).await;
    assert!(browser.displayed("#upload").await);
    // The token is in sessionStorage, never in the URL.
    let url = browser.call(reqwest::Method::GET, "/url", None).await;
    assert_eq!(url, json!(app.url("/")));
    let stored = browser
        .script("return sessionStorage.getItem('bi_token')")
        .await;
    let token = stored
        .as_str()
        .expect("a token in sessionStorage")
        .to_string();
    assert_eq!(browser.script("return localStorage.length").await, json!(0));

    // Upload a file with bad rows; the progress reaches 100 %, the counters are right.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, WITH_BAD_ROWS).unwrap();
    browser
        .type_into("#file", &file.display().to_string())
        .await;
    browser.wait_text("#chosen", "customers.csv", 5).await;
    browser.click("#start").await;
    browser.wait_text("#job-status", "Status: done", 60).await;
    assert_eq!(
        browser.property("#upload-progress", "value").await,
        json!(100)
    );
    assert_eq!(
        browser.property("#import-progress", "value").await,
        json!(100)
    );
    assert_eq!(browser.text("#processed").await, "5");
    assert_eq!(browser.text("#inserted").await, "3");
    assert_eq!(browser.text("#updated").await, "0");
    assert_eq!(browser.text("#bad").await, "2");

    // The report link downloads the job's errors.csv.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.displayed("#report").await {
        assert!(Instant::now() < deadline, "no report link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let href = browser.property("#report", "href").await;
    let downloaded = app
        .client
        .get(href.as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let jobs: Value = app.get(&token, "/imports").await.json().await.unwrap();
    let id = jobs["items"][0]["id"].as_str().unwrap().to_string();
    let url = app.report_url(&token, &id, "").await;
    let expected = app.download(&url).await;
    assert_eq!(downloaded, expected);
    assert!(String::from_utf8_lossy(&downloaded).contains("invalid_email"));
    browser.wait_text("#jobs", "customers.csv", 10).await;
    if let Ok(path) = std::env::var("WEB_SCREENSHOT") {
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    // A file dropped on the page is the one chosen (a drop event with a DataTransfer, as a
    // browser dispatches it; WebDriver cannot drag files from the desktop).
    browser
        .script(
            "const t = new DataTransfer();\
             t.items.add(new File(['email\\nzed@example.com\\n'], 'dropped.csv', {type: 'text/csv'}));\
             document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true}));\
             return null",
        )
        .await;
    browser.wait_text("#chosen", "dropped.csv", 5).await;
    assert_eq!(
        browser
            .script("return document.getElementById('file').files[0].name")
            .await,
        json!("dropped.csv")
    );

    // A slowed import, cancelled from the page.
    let slow = dir.path().join("slow.csv");
    std::fs::write(&slow, common::csv_rows(3000)).unwrap();
    browser
        .type_into("#file", &slow.display().to_string())
        .await;
    browser.wait_text("#chosen", "slow.csv", 5).await;
    browser.click("#start").await;
    browser.wait_text("#job-status", "processing", 60).await;
    assert!(browser.displayed("#cancel").await);
    browser.click("#cancel").await;
    browser.wait_text("#job-status", "cancelled", 60).await;
    let jobs: Value = app.get(&token, "/imports").await.json().await.unwrap();
    assert_eq!(jobs["items"][0]["status"], "cancelled");
    let processed = jobs["items"][0]["processed_rows"].as_i64().unwrap();
    assert!(processed < 3000, "cancelled before the end: {processed}");
    browser.wait_text("#jobs", "cancelled", 10).await;

    // Every control has a label (or a name of its own) and is reachable by Tab.
    let unlabelled = browser
        .script(
            "return Array.from(document.querySelectorAll('input, select, button, a[href]'))\
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim() || e.tabIndex < 0)\
               .map(e => e.outerHTML)",
        )
        .await;
    assert_eq!(
        unlabelled,
        json!([]),
        "controls without a label or out of the tab order"
    );
}
