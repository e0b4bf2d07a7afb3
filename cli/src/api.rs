//! The HTTP calls to the API.

use crate::{config, output::Out};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{multipart, Body, Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::{
    path::Path,
    time::{Duration, Instant},
};
use tokio::io::AsyncReadExt;

/// Why a command stopped, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: 2,
            message: message.into(),
        }
    }
}

pub struct ImportOptions {
    pub mode: &'static str,
    pub dry_run: bool,
    pub max_errors: Option<u64>,
}

pub struct Api {
    base: String,
    client: Client,
    /// Only for downloads from another host (presigned storage links).
    plain: Client,
    token: Option<String>,
}

/// The innermost cause of an error, which says what went wrong on the wire ("Connection
/// refused (os error 111)") where the outer ones only say "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Api {
    pub fn new(base: &str) -> Result<Api, Failure> {
        let build = || {
            Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("bulk-import-cli/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Failure::usage(format!("cannot start the HTTP client: {e}")))
        };
        Ok(Api {
            base: base.to_string(),
            client: build()?,
            plain: build()?,
            token: None,
        })
    }

    /// The same client with the caller's token (`BULK_IMPORT_TOKEN` or the saved one).
    pub fn authenticated(mut self, url: &str) -> Result<Api, Failure> {
        self.token = Some(config::token(url)?);
        Ok(self)
    }

    fn connection(&self, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            return Failure::usage(format!("the API at {} did not answer in time", self.base));
        }
        Failure::usage(format!(
            "cannot reach the API at {}: {}",
            self.base,
            root_cause(&e)
        ))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The body of a 2xx answer, or the API's `{code, message}` as a failure.
    async fn json_of(&self, resp: Response) -> Result<Value, Failure> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.connection(e))?;
        if status.is_success() {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&body).map_err(|e| {
                Failure::usage(format!(
                    "the API at {} answered {status} with no JSON: {e}",
                    self.base
                ))
            });
        }
        Err(api_failure(status, &body))
    }

    /// A request with an optional JSON body, answered with JSON (or the API's error).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.connection(e))?;
        self.json_of(resp).await
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, Failure> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post_json(&self, path: &str) -> Result<Value, Failure> {
        self.send(reqwest::Method::POST, path, None).await
    }

    pub async fn post_body(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        invitation: Option<&str>,
        organization: Option<&str>,
    ) -> Result<(), Failure> {
        let body = json!({"email": email, "password": password,
                          "invitation": invitation, "organization": organization});
        self.post_body("/auth/register", &body).await.map(|_| ())
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<String, Failure> {
        let body = self
            .post_body(
                "/auth/token",
                &json!({"email": email, "password": password}),
            )
            .await?;
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Failure::usage("the API answered the login without a token"))
    }

    /// Uploads the file (a byte progress bar on terminals). Returns the job and whether it is
    /// new (201) rather than the one this key already made (200).
    pub async fn upload(
        &self,
        file: &Path,
        opts: &ImportOptions,
        key: &str,
        out: &Out,
    ) -> Result<(Value, bool), Failure> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload.csv".into());
        let mut query = format!("/imports?mode={}", opts.mode);
        if opts.dry_run {
            query.push_str("&dry_run=true");
        }
        if let Some(n) = opts.max_errors {
            query.push_str(&format!("&max_errors={n}"));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let handle = tokio::fs::File::open(file)
                .await
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
            let len = handle
                .metadata()
                .await
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
                .len();
            let bar = out.upload_bar(len);
            let counted = bar.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(handle, 64 * 1024)
                .inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
            let part = multipart::Part::stream_with_length(Body::wrap_stream(stream), len)
                .file_name(name.clone())
                .mime_str("text/csv")
                .expect("a valid mime type");
            let form = multipart::Form::new().part("file", part);
            let sent = self
                .request(reqwest::Method::POST, &query)
                .header("Idempotency-Key", key)
                .multipart(form)
                .send()
                .await;
            bar.finish_and_clear();
            let resp = sent.map_err(|e| self.connection(e))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let busy = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::CONFLICT;
            if !status.is_success() && busy && Instant::now() < deadline {
                let body = resp.bytes().await.map_err(|e| self.connection(e))?;
                let code = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let retryable = status != StatusCode::CONFLICT || code == "upload_in_progress";
                if retryable {
                    let wait = Duration::from_secs(retry_after.unwrap_or(2).clamp(1, 30));
                    out.note(&format!(
                        "the API is busy ({code}); retrying in {} s",
                        wait.as_secs()
                    ));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(api_failure(status, &body));
            }
            let created = status == StatusCode::CREATED;
            return Ok((self.json_of(resp).await?, created));
        }
    }

    /// Follows a job until it ends: the event stream, and polling when the stream cannot be
    /// had or stops early. Returns the final job.
    pub async fn follow(&self, id: &str, out: &Out) -> Result<Value, Failure> {
        let bar = out.import_bar();
        let mut rate = Rate::default();
        let mut last = self.get_json(&format!("/imports/{id}")).await?;
        show(&bar, &last, &mut rate);
        if finished(&last) {
            bar.finish_and_clear();
            return Ok(last);
        }
        match self.stream(id, &bar, &mut rate, &mut last).await {
            Ok(StreamEnd::Finished) => {
                bar.finish_and_clear();
                return Ok(last);
            }
            Ok(StreamEnd::TokenExpired) => {
                bar.finish_and_clear();
                return Err(Failure::usage(
                    "the token expired while following the job: log in again",
                ));
            }
            Ok(StreamEnd::Early) | Err(_) => {}
        }
        // Polling: the stream was refused (e.g. too_many_streams), broke, or ended early.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            last = self.get_json(&format!("/imports/{id}")).await?;
            show(&bar, &last, &mut rate);
            if finished(&last) {
                bar.finish_and_clear();
                return Ok(last);
            }
        }
    }

    /// Reads `GET /imports/{id}/events` until the final snapshot or the stream's end.
    async fn stream(
        &self,
        id: &str,
        bar: &indicatif::ProgressBar,
        rate: &mut Rate,
        last: &mut Value,
    ) -> Result<StreamEnd, Failure> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/imports/{id}/events"))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.connection(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(api_failure(status, &body));
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut event = String::new();
        let mut data = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.connection(e))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if event == "end" {
                        let reason: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        if reason["reason"] == "token_expired" {
                            return Ok(StreamEnd::TokenExpired);
                        }
                        return Ok(StreamEnd::Early);
                    }
                    if !data.is_empty() && (event.is_empty() || event == "progress") {
                        if let Ok(job) = serde_json::from_str::<Value>(&data) {
                            show(bar, &job, rate);
                            *last = job;
                            if finished(last) {
                                return Ok(StreamEnd::Finished);
                            }
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
        Ok(StreamEnd::Early)
    }

    /// Streams an authenticated GET of `path` into the file `to` (or standard output for
    /// `-`); its size.
    pub async fn download(&self, path: &str, to: &Path) -> Result<u64, Failure> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.connection(e))?;
        save(resp, to, |e| self.connection(e)).await
    }

    /// Downloads errors.csv (or, with `rows`, the file of bad rows) to `path`; its size.
    pub async fn download_report(&self, id: &str, rows: bool, path: &Path) -> Result<u64, Failure> {
        let query = if rows { "?format=rows" } else { "" };
        let link = self
            .get_json(&format!("/imports/{id}/errors{query}"))
            .await?;
        let url = link["url"]
            .as_str()
            .ok_or_else(|| Failure::usage("the API answered without a report URL"))?;
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_string()
        };
        // The link is its own credential: the bearer token is not sent with it.
        let resp = self.plain.get(&url).send().await.map_err(|e| {
            Failure::usage(format!("cannot download the report: {}", root_cause(&e)))
        })?;
        save(resp, path, |e| {
            Failure::usage(format!("cannot download the report: {}", root_cause(&e)))
        })
        .await
    }
}

/// Streams a 2xx answer's body into `to` (standard output for `-`), its size; any other
/// answer is the API's failure. A file is written beside as `.part` and renamed when
/// complete. `broken` says what a failure of the stream is.
async fn save(
    resp: Response,
    to: &Path,
    broken: impl Fn(reqwest::Error) -> Failure,
) -> Result<u64, Failure> {
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        return Err(api_failure(status, &body));
    }
    if to.as_os_str() == "-" {
        let cannot = "cannot write to standard output";
        return copy_body(resp, &mut tokio::io::stdout(), cannot, &broken).await;
    }
    let tmp = to.with_extension("part");
    let cannot = format!("cannot write {}", tmp.display());
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| Failure::usage(format!("{cannot}: {e}")))?;
    let n = copy_body(resp, &mut file, &cannot, &broken).await?;
    drop(file);
    std::fs::rename(&tmp, to)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", to.display())))?;
    Ok(n)
}

/// Copies a body into `out` and flushes it; its size. `cannot` starts a write failure's
/// message.
async fn copy_body(
    resp: Response,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    cannot: &str,
    broken: &impl Fn(reqwest::Error) -> Failure,
) -> Result<u64, Failure> {
    use tokio::io::AsyncWriteExt;
    let write_failed = |e: std::io::Error| Failure::usage(format!("{cannot}: {e}"));
    let mut body = resp.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(broken)?;
        out.write_all(&chunk).await.map_err(write_failed)?;
        n += chunk.len() as u64;
    }
    out.flush().await.map_err(write_failed)?;
    Ok(n)
}

enum StreamEnd {
    Finished,
    TokenExpired,
    Early,
}

fn api_failure(status: StatusCode, body: &[u8]) -> Failure {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|v| v["code"].as_str());
    let message = parsed.as_ref().and_then(|v| v["message"].as_str());
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{m} ({c}, HTTP {})", status.as_u16()),
        (Some(c), None) => format!("{c} (HTTP {})", status.as_u16()),
        _ => format!("the API answered HTTP {}", status),
    };
    Failure::usage(text)
}

fn finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("done" | "failed" | "cancelled")
    )
}

/// Rows per second and the time left, measured from the first snapshot that showed the job
/// running (this machine's clock only: no skew with the server's).
#[derive(Default)]
struct Rate {
    /// When, how many rows, what percent of the file.
    start: Option<(Instant, i64, f64)>,
}

fn show(bar: &indicatif::ProgressBar, job: &Value, rate: &mut Rate) {
    let rows = job["processed_rows"].as_i64().unwrap_or(0);
    let bad = job["error_rows"].as_i64().unwrap_or(0);
    let status = job["status"].as_str().unwrap_or("?");
    let percent = job["progress_percent"]
        .as_f64()
        .unwrap_or(0.0)
        .clamp(0.0, 100.0);
    if status == "processing" && rate.start.is_none() {
        rate.start = Some((Instant::now(), rows, percent));
    }
    let mut message = format!("{status}: {rows} rows, {bad} bad");
    if let Some((t, r0, p0)) = rate.start {
        let secs = t.elapsed().as_secs_f64();
        if secs >= 0.5 && rows > r0 {
            message.push_str(&format!(", {:.0} rows/s", (rows - r0) as f64 / secs));
        }
        if secs >= 0.5 && percent > p0 && status == "processing" {
            let left = secs * (100.0 - percent) / (percent - p0);
            let left = left.round() as u64;
            let eta = if left < 60 {
                format!("{left}s")
            } else if left < 3600 {
                format!("{}m{:02}s", left / 60, left % 60)
            } else {
                format!("{}h{:02}m", left / 3600, left % 3600 / 60)
            };
            message.push_str(&format!(", ETA {eta}"));
        }
    }
    bar.set_position((percent * 10.0) as u64);
    bar.set_message(message);
}

/// The default Idempotency-Key: the same file with the same options always gives the same
/// key, so a command run again after a network failure finds its job instead of making a
/// second one.
pub async fn default_key(file: &Path, opts: &ImportOptions) -> Result<String, Failure> {
    let mut handle = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let mut hash = Sha256::new();
    hash.update(format!(
        "bulk-import-cli key v1\nmode={}\ndry_run={}\nmax_errors={:?}\n",
        opts.mode, opts.dry_run, opts.max_errors
    ));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = handle
            .read(&mut buf)
            .await
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(format!("cli-{}", &hex::encode(hash.finalize())[..40]))
}
