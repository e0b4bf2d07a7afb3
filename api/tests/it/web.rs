//! The web page at `/` in a real headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `scripts/browser.sh` installs them and these tests run
//! it), against the real API in local mode. The accessibility audit is axe-core, installed from
//! npm by `scripts/axe.sh` into a test-only directory and injected over WebDriver (the API never
//! serves it). `WEB_SCREENSHOT=docs` saves the screenshots of docs/web.md into that directory.

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

    /// Polls until the JavaScript expression `js` is truthy; returns its value.
    async fn wait_js(&self, js: &str, what: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.script(&format!("return {js}")).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            let error = self.text("#error").await;
            assert!(
                Instant::now() < deadline,
                "never {what} ({js}); page error: {error:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the focused element.
    async fn focused(&self) -> Value {
        self.script("return document.activeElement && document.activeElement.id")
            .await
    }

    /// Runs axe-core on the page as it is; answers the serious and critical violations.
    async fn axe(&self, source: &str) -> Value {
        self.script(&format!("{source}\n;return typeof axe")).await;
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"args": [], "script": "const done = arguments[arguments.length - 1];\
                axe.run(document, {resultTypes: ['violations']})\
                  .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                    .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.html)}))))\
                  .catch(e => done('axe failed: ' + e));"})),
        )
        .await
    }

    /// Saves a screenshot as `name` in the `WEB_SCREENSHOT` directory, when that is set, with
    /// the element `id` scrolled to the top.
    async fn save_screenshot(&self, name: &str, id: &str) {
        if let Ok(dir) = std::env::var("WEB_SCREENSHOT") {
            self.script(&format!(
                "document.getElementById('{id}').scrollIntoView(); return null"
            ))
            .await;
            // A relative directory is the workspace's (cargo runs the tests in api/).
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let path = root.join(dir).join(name);
            std::fs::write(path, self.screenshot().await).unwrap();
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
    // Its preview (the page sends the start of a file larger than the 64 KiB read).
    assert!(std::fs::metadata(&slow).unwrap().len() > 64 * 1024);
    browser
        .wait_text("#preview-status", "5 of 5 headers mapped", 30)
        .await;
    browser
        .wait_text(
            "#rows-caption",
            "The first 20 rows as they will be read (the file goes on)",
            5,
        )
        .await;
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

/// A windows-1251 file with `;` and headers the service half knows: "Mobile Number" is not one
/// of the spellings it detects. Three good rows, then twelve with a bad email.
fn cyrillic_file() -> Vec<u8> {
    let mut text = String::from("E-mail Address;Given Name;Family Name;Mobile Number\r\n");
    text.push_str("ivan@example.com;Иван;Петров;+7 495 000 0001\r\n");
    text.push_str("anna@example.com;Анна;Смирнова;+7 495 000 0002\r\n");
    text.push_str("oleg@example.com;Олег;Кузнецов;+7 495 000 0003\r\n");
    for i in 1..=12 {
        text.push_str(&format!(
            "плохой-адрес-{i};Пётр;Сидоров;+7 495 111 00{i:02}\r\n"
        ));
    }
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1251.encode(&text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// The serious and critical axe-core violations of the page as it is now.
async fn assert_accessible(browser: &Browser, axe: &str, when: &str) {
    let violations = browser.axe(axe).await;
    assert_eq!(violations, json!([]), "axe violations {when}");
}

#[tokio::test]
async fn the_web_page_previews_maps_imports_pages_bad_rows_retries_and_deletes() {
    let app = TestApp::spawn(Backend::S3).await;
    let axe_js = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/axe.sh"))
        .output()
        .unwrap();
    assert!(axe_js.status.success(), "scripts/axe.sh failed");
    let axe = std::fs::read_to_string(String::from_utf8(axe_js.stdout).unwrap().trim()).unwrap();
    // The product does not serve axe: it reaches the page only through WebDriver.
    let probe = app
        .client
        .get(app.url("/ui/axe.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404);

    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    assert_accessible(&browser, &axe, "on the sign-in form").await;

    // The password rule is shown; a weak password is refused next to the password field.
    let rule = browser.text("#password-rule").await;
    assert!(rule.contains("8 to 128 characters"), "{rule}");
    let email = format!("map{}@example.com", Uuid::new_v4().simple());
    browser.type_into("#email", &email).await;
    browser.type_into("#password", "password").await;
    browser.click("#register").await;
    browser.wait_text("#password-error", "password", 30).await;
    assert_eq!(
        browser.property("#password", "ariaInvalid").await,
        json!("true")
    );
    assert_eq!(browser.text("#error").await, "");
    assert_accessible(&browser, &axe, "with an error next to a field").await;
    browser
        .script("document.getElementById('password').value = ''; return null")
        .await;
    browser.type_into("#password", "pass12345").await;
    browser.click("#register").await;
    browser.wait_text("#who", &email, 30).await;
    assert_eq!(browser.focused().await, json!("upload-title"));
    let token = browser
        .script("return sessionStorage.getItem('bi_token')")
        .await
        .as_str()
        .unwrap()
        .to_string();

    // The template CSV has the five columns.
    let template = browser.property("#template", "href").await;
    assert!(
        template
            .as_str()
            .unwrap()
            .contains("email%2Cfirst_name%2Clast_name%2Cphone%2Ccity"),
        "{template}"
    );

    // A header the service finds no email in: the page offers the header's cells to map.
    let dir = tempfile::tempdir().unwrap();
    let no_email = dir.path().join("no-email.csv");
    std::fs::write(&no_email, "Mail Addr,First Name\nzoe@example.com,Zoe\n").unwrap();
    browser
        .type_into("#file", &no_email.display().to_string())
        .await;
    browser
        .wait_text("#preview-status", "found no email column", 30)
        .await;
    assert!(!browser.text("#mapping-error").await.is_empty());
    browser.click("#map-0 option[value=email]").await;
    browser.wait_text("#rows", "zoe@example.com", 30).await;
    assert_eq!(browser.text("#mapping-error").await, "");

    // Picking the file opens its preview: `;`, windows-1251, the proposed mapping.
    let file = dir.path().join("clients-1251.csv");
    std::fs::write(&file, cyrillic_file()).unwrap();
    browser
        .type_into("#file", &file.display().to_string())
        .await;
    browser
        .wait_text("#preview-status", "headers mapped", 30)
        .await;
    assert!(browser.displayed("#preview").await);
    assert_eq!(browser.focused().await, json!("preview-title"));
    assert_eq!(browser.text("#p-delimiter").await, ";");
    assert_eq!(browser.text("#p-encoding").await, "windows-1251");
    let mapping = browser
        .script(
            "return Array.from(document.querySelectorAll('#mapping tr'))\
               .map(tr => [tr.cells[0].textContent, tr.querySelector('select').value])",
        )
        .await;
    assert_eq!(
        mapping,
        json!([
            ["E-mail Address", "email"],
            ["Given Name", "first_name"],
            ["Family Name", "last_name"],
            ["Mobile Number", ""]
        ])
    );
    let rows = browser.text("#rows").await;
    assert!(rows.contains("Иван"), "decoded as windows-1251: {rows}");
    assert!(!rows.contains("+7 495 000 0001"), "no phone yet: {rows}");

    // The user maps the unknown header; the rows are read again with the mapping.
    browser.click("#map-3 option[value=phone]").await;
    browser.wait_text("#rows", "+7 495 000 0001", 30).await;
    assert!(browser.text("#rows").await.contains("invalid_email"));
    browser.save_screenshot("web-preview.png", "preview").await;
    assert_accessible(&browser, &axe, "on the preview").await;

    // A dry run, then the same file for real with one button.
    browser.click("#dry-run").await;
    browser.click("#start").await;
    assert_eq!(browser.focused().await, json!("job-title"));
    browser
        .wait_text("#job-status", "Status: done (dry run)", 60)
        .await;
    assert_eq!(browser.text("#inserted").await, "3");
    let customers: Value = app.get_json(&token, "/customers").await;
    assert_eq!(customers["items"], json!([]), "a dry run writes nothing");
    browser
        .wait_js(
            "!document.getElementById('real').hidden",
            "the import-for-real button",
            10,
        )
        .await;
    browser.click("#real").await;
    browser.wait_text("#job-status", "Status: done", 60).await;
    assert!(!browser.text("#job-status").await.contains("dry run"));
    assert_eq!(browser.text("#inserted").await, "3");
    assert_eq!(browser.text("#bad").await, "12");
    assert!(browser
        .text("#job-dialect")
        .await
        .contains("phone ← Mobile Number"));
    let ivan = app.get_json(&token, "/customers/ivan@example.com").await;
    assert_eq!(ivan["first_name"], "Иван");
    assert_eq!(ivan["phone"], "+7 495 000 0001");
    let jobs = app.get_json(&token, "/imports").await;
    let real_id = jobs["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(jobs["items"][0]["dry_run"], false);
    assert_eq!(jobs["items"][1]["dry_run"], true);

    // The bad rows, ten a page.
    browser
        .wait_text("#bad-caption", "Bad rows 1–10 of 12", 30)
        .await;
    let count = "document.querySelectorAll('#bad-body tr').length";
    assert_eq!(browser.script(&format!("return {count}")).await, json!(10));
    let first = browser.text("#bad-body tr:first-child").await;
    assert!(
        first.contains("invalid_email") && first.contains("плохой-адрес-1"),
        "{first}"
    );
    browser.save_screenshot("web-page.png", "job").await;
    assert_accessible(&browser, &axe, "with the bad rows").await;
    browser.click("#bad-next").await;
    browser
        .wait_text("#bad-caption", "Bad rows 11–12 of 12", 30)
        .await;
    // The Next button, now disabled, handed the focus to the table's heading.
    assert_eq!(browser.focused().await, json!("bad-rows-title"));
    assert_eq!(browser.script(&format!("return {count}")).await, json!(2));
    assert_eq!(browser.property("#bad-next", "disabled").await, json!(true));
    browser.click("#bad-prev").await;
    browser
        .wait_text("#bad-caption", "Bad rows 1–10 of 12", 30)
        .await;

    // The bad-rows file behind the page's link: the twelve rows, ready to import again.
    browser
        .wait_js(
            "!document.getElementById('rows-file').hidden",
            "the bad-rows link",
            10,
        )
        .await;
    let href = browser.property("#rows-file", "href").await;
    let downloaded = app.download(href.as_str().unwrap()).await;
    let text = String::from_utf8(downloaded.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("email,first_name,last_name,phone,city"));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 12, "{text}");
    assert!(
        rest[0].contains("плохой-адрес-1") && rest[0].contains("+7 495 111 0001"),
        "{text}"
    );
    let expected = app
        .download(&app.report_url(&token, &real_id, "?format=rows").await)
        .await;
    assert_eq!(downloaded, expected);

    // Stopped by "max errors": failed; retried from the page; deleted from the page.
    browser.click("#dry-run").await;
    browser.type_into("#max-errors", "1").await;
    browser.click("#start").await;
    browser
        .wait_text("#job-status", "too_many_errors", 60)
        .await;
    let jobs = app.get_json(&token, "/imports").await;
    let failed = jobs["items"][0].clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["max_errors"], 1);
    let failed_id = failed["id"].as_str().unwrap().to_string();
    assert!(browser.displayed("#retry").await);
    assert!(!browser.displayed("#cancel").await);
    browser.click("#retry").await;
    browser.wait_text("#notice", "runs again", 30).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let retried = loop {
        let job = app.get_json(&token, &format!("/imports/{failed_id}")).await;
        if job["started_at"] != failed["started_at"]
            && ["done", "failed"].contains(&job["status"].as_str().unwrap())
        {
            break job;
        }
        assert!(Instant::now() < deadline, "the retry never ran: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    browser
        .wait_text(
            "#job-status",
            &format!("Status: {}", retried["status"].as_str().unwrap()),
            30,
        )
        .await;
    browser
        .wait_js(
            "!document.getElementById('delete').hidden",
            "the delete button",
            10,
        )
        .await;
    browser.click("#delete").await;
    browser
        .wait_text("#notice", "Deleted the import of clients-1251.csv", 30)
        .await;
    assert!(!browser.displayed("#job").await);
    assert_eq!(browser.focused().await, json!("history-title"));
    let gone = app.get(&token, &format!("/imports/{failed_id}")).await;
    assert_eq!(gone.status(), 404);

    // Past imports: a status filter and pages of ten.
    for i in 0..9 {
        let r = app
            .upload(
                &token,
                Some(&format!("more-{i}")),
                "upsert",
                b"email\nzed@example.com\n",
            )
            .await;
        assert_eq!(r.status(), 201);
        let job: Value = r.json().await.unwrap();
        app.wait_finished(&token, job["id"].as_str().unwrap()).await;
    }
    browser.click("#refresh").await;
    browser.wait_text("#jobs-caption", "1–10 of 11", 30).await;
    browser.click("#jobs-next").await;
    browser.wait_text("#jobs-caption", "11–11 of 11", 30).await;
    assert!(browser.text("#jobs").await.contains("done (dry run)"));
    browser.click("#jobs-prev").await;
    browser.wait_text("#jobs-caption", "1–10 of 11", 30).await;
    browser.click("#status-filter option[value=failed]").await;
    browser
        .wait_text("#jobs-caption", "with status failed: none of 0", 30)
        .await;
    browser.click("#status-filter option[value=done]").await;
    browser
        .wait_text("#jobs-caption", "with status done: 1–10 of 11", 30)
        .await;

    // A proxy's HTML error page becomes a readable message.
    browser
        .script(
            "window.realFetch = window.fetch;\
             window.fetch = () => Promise.resolve(new Response('<html><body>502 Bad Gateway</body></html>',\
               {status: 502, headers: {'Content-Type': 'text/html'}}));\
             return null",
        )
        .await;
    browser.click("#refresh").await;
    let error = browser
        .wait_text("#error", "instead of the service's answer", 10)
        .await;
    assert!(
        error.contains("HTTP 502") && error.contains("proxy"),
        "{error}"
    );
    assert!(!error.contains("<html>"), "{error}");
    browser
        .script("window.fetch = window.realFetch; return null")
        .await;
    assert_accessible(&browser, &axe, "at the end").await;
}
