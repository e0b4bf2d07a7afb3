//! The HTTP calls to the API. Connection errors, 5xx, 408 and 429 are temporary failures
//! (exit 75), 401 and 403 authentication failures (exit 4): see `failure`.

use crate::{config, failure::Failure, options::ImportOptions, output::Out};
use bulk_import_types::JobView;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{multipart, Body, Client, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// A path segment or query value, percent-encoded.
pub fn encoded(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A successful login: the token, and the device cookie the API set (`bi_device=…`).
pub struct Login {
    pub token: String,
    pub device: Option<String>,
}

/// The name of the API's device cookie (see `config`).
const DEVICE_COOKIE: &str = "bi_device=";

pub struct Api {
    base: String,
    client: Client,
    /// Only for downloads from another host (presigned storage links).
    plain: Client,
    token: Option<String>,
}

/// The innermost cause of an error, which says what went wrong on the wire ("Connection
/// refused (os error 111)") where the outer ones only say "error sending request".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
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

    pub fn connection(&self, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            return Failure::temporary(format!("the API at {} did not answer in time", self.base));
        }
        Failure::temporary(format!(
            "cannot reach the API at {}: {}",
            self.base,
            root_cause(&e)
        ))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The body of a 2xx answer (`null` when empty), or the API's `{code, message}` as a
    /// failure.
    async fn json_of<T: DeserializeOwned>(&self, resp: Response) -> Result<T, Failure> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.connection(e))?;
        if !status.is_success() {
            return Err(Failure::from_answer(status, &body));
        }
        let body: &[u8] = if body.is_empty() { b"null" } else { &body };
        serde_json::from_slice(body).map_err(|e| {
            // A proxy's HTML page or a body cut short: the API itself always answers JSON.
            let kind = if status.is_server_error() {
                Failure::temporary
            } else {
                Failure::usage
            };
            kind(format!(
                "the API at {} answered {status} with unexpected JSON: {e}",
                self.base
            ))
        })
    }

    /// A request with an optional JSON body, answered with JSON (or the API's error).
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Failure> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.connection(e))?;
        self.json_of(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(reqwest::Method::POST, path, None).await
    }

    pub async fn post_body<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, Failure> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A POST of a multipart form, answered with JSON (or the API's error).
    pub async fn send_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: multipart::Form,
    ) -> Result<T, Failure> {
        let req = self.request(reqwest::Method::POST, path).multipart(form);
        let resp = req.send().await.map_err(|e| self.connection(e))?;
        self.json_of(resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        self.send::<Value>(reqwest::Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    /// `GET /imports/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView, Failure> {
        self.get(&format!("/imports/{}", encoded(id))).await
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
        self.post_body::<Value>("/auth/register", &body)
            .await
            .map(|_| ())
    }

    /// `POST /auth/token`, presenting `device` (a saved `bi_device=…` cookie) if any.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        device: Option<&str>,
    ) -> Result<Login, Failure> {
        #[derive(serde::Deserialize)]
        struct TokenView {
            access_token: String,
        }
        let mut req = self
            .request(reqwest::Method::POST, "/auth/token")
            .json(&json!({"email": email, "password": password}));
        if let Some(cookie) = device {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        let resp = req.send().await.map_err(|e| self.connection(e))?;
        let device = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.trim().starts_with(DEVICE_COOKIE))
            .map(|pair| pair.trim().to_string());
        let body: TokenView = self.json_of(resp).await?;
        Ok(Login {
            token: body.access_token,
            device,
        })
    }

    /// Uploads the file (a byte progress bar on terminals). Returns the job and whether it is
    /// new (201) rather than the one this key already made (200).
    pub async fn upload(
        &self,
        file: &Path,
        name: &str,
        opts: &ImportOptions,
        key: &str,
        out: &Out,
    ) -> Result<(JobView, bool), Failure> {
        let query = opts.query();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (form, bar) = file_form(file, name, out).await?;
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
                return Err(Failure::from_answer(status, &body));
            }
            let created = status == StatusCode::CREATED;
            return Ok((self.json_of(resp).await?, created));
        }
    }

    /// `POST /imports` with a JSON body: an object already in storage; the job and whether
    /// it is new.
    pub async fn import_object(
        &self,
        source: &str,
        opts: &ImportOptions,
        key: &str,
    ) -> Result<(JobView, bool), Failure> {
        let resp = self
            .request(reqwest::Method::POST, "/imports")
            .header("Idempotency-Key", key)
            .json(&crate::options::object_body(source, opts))
            .send()
            .await
            .map_err(|e| self.connection(e))?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((self.json_of(resp).await?, created))
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
        #[derive(serde::Deserialize)]
        struct Link {
            url: String,
        }
        let link: Link = self
            .get(&format!("/imports/{}/errors{query}", encoded(id)))
            .await?;
        let url = if link.url.starts_with('/') {
            format!("{}{}", self.base, link.url)
        } else {
            link.url
        };
        let broken = |e: reqwest::Error| {
            Failure::temporary(format!("cannot download the report: {}", root_cause(&e)))
        };
        // The link is its own credential: the bearer token is not sent with it.
        let resp = self.plain.get(&url).send().await.map_err(broken)?;
        save(resp, path, broken).await
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
        return Err(Failure::from_answer(status, &body));
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

/// The multipart form of an upload, streaming `file` as the part `file`, and the byte progress
/// bar it advances (a fresh one each attempt).
async fn file_form(
    file: &Path,
    name: &str,
    out: &Out,
) -> Result<(multipart::Form, indicatif::ProgressBar), Failure> {
    let unreadable =
        |e: std::io::Error| Failure::usage(format!("cannot read {}: {e}", file.display()));
    let handle = tokio::fs::File::open(file).await.map_err(unreadable)?;
    let len = handle.metadata().await.map_err(unreadable)?.len();
    let bar = out.upload_bar(len);
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(handle, 64 * 1024)
        .inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
    let part = multipart::Part::stream_with_length(Body::wrap_stream(stream), len)
        .file_name(name.to_string())
        .mime_str("text/csv")
        .expect("a valid mime type");
    Ok((multipart::Form::new().part("file", part), bar))
}
