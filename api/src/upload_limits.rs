//! Caps and timeouts on the whole multipart upload request (docs/configuration.md, Limits), chunked or not.
//!
//! The body reaches the multipart parser through [`LimitedMultipart`], which counts and times
//! every byte before the `file` part's data starts — preamble, part headers, other fields:
//! - at most `UPLOAD_HEAD_MAX_BYTES` of them (413 `upload_head_too_large`), handed to the
//!   parser in slices of at most 8 KiB so that it never holds much more than the cap;
//! - all of them within `UPLOAD_IDLE_TIMEOUT_SECONDS` of the request's start (408
//!   `upload_timeout`), so a client that sends its headers and a boundary line and then
//!   nothing is answered within that time;
//! - at most `UPLOAD_MAX_PARTS` parts up to and including `file` (413 `too_many_parts`).
//!
//! From the file's data on, each read must arrive within `UPLOAD_IDLE_TIMEOUT_SECONDS` (408)
//! and the file is capped by `MAX_UPLOAD_BYTES` as it streams (413). A client that keeps
//! sending, but slowly, is cut too:
//! - the file's data must arrive at `UPLOAD_MIN_BYTES_PER_SECOND` or faster, averaged over
//!   each `UPLOAD_RATE_WINDOW_SECONDS` spent waiting for the client (408 `upload_too_slow`).
//!   Only the time this process waits for the client's bytes counts, not the time it spends
//!   writing them to storage (while it does, the client cannot send), so a slow bucket never
//!   cuts a fast client;
//! - the whole request must end within `UPLOAD_TIMEOUT_SECONDS` of its start (408
//!   `upload_timeout`), however it sends.
//!
//! So an upload holds its slot at most `UPLOAD_TIMEOUT_SECONDS`, and a trickle of a few bytes
//! now and then (each resetting the idle timer) is cut at the end of its first window. The
//! route answers at once and releases the Idempotency-Key on any of these; the rest of the
//! body is then read and discarded for at most 2 s and 8 MiB (a lingering close) so that the
//! client sees the answer.

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};
use axum::{
    body::Body,
    extract::{FromRequest, Multipart, Request},
    http::StatusCode,
};
use bytes::Bytes;
use futures_util::StreamExt;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::Instant;

/// Largest slice of the head handed to the parser at once.
const SLICE: usize = 8 * 1024;

const TOO_LARGE: u8 = 1;
const TIMED_OUT: u8 = 2;
const TOO_SLOW: u8 = 3;
const DEADLINE: u8 = 4;

#[derive(Default)]
struct Shared {
    file_started: AtomicBool,
    tripped: AtomicU8,
}

/// The upload's body, limited as the module says; `limits` tells the handler which limit
/// (if any) ended the body.
pub struct LimitedMultipart {
    pub multipart: Multipart,
    pub limits: UploadLimits,
}

#[derive(Clone)]
pub struct UploadLimits {
    shared: Arc<Shared>,
    idle: Duration,
    head_max: u64,
    max_parts: usize,
    rate: MinRate,
    /// `UPLOAD_TIMEOUT_SECONDS`.
    total: Duration,
}

/// `UPLOAD_MIN_BYTES_PER_SECOND` over windows of `UPLOAD_RATE_WINDOW_SECONDS` of waiting.
#[derive(Clone, Copy, Debug)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub window: Duration,
}

/// The file's transfer rate, measured over the time spent waiting for the client.
#[derive(Debug)]
struct RateMeter {
    rate: MinRate,
    waited: Duration,
    bytes: u64,
}

impl RateMeter {
    fn new(rate: MinRate) -> RateMeter {
        RateMeter {
            rate,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// How much longer the current window may wait for the client.
    fn left(&self) -> Duration {
        self.rate.window.saturating_sub(self.waited)
    }

    /// Counts a wait of `waited` that brought `bytes`; false when a window ended below the
    /// rate. A window that ended at the rate starts the next one.
    fn record(&mut self, waited: Duration, bytes: u64) -> bool {
        self.waited += waited;
        self.bytes += bytes;
        if self.waited < self.rate.window {
            return true;
        }
        let needed = self.rate.bytes_per_second as f64 * self.waited.as_secs_f64();
        let fast_enough = self.bytes as f64 >= needed;
        self.waited = Duration::ZERO;
        self.bytes = 0;
        fast_enough
    }
}

impl UploadLimits {
    /// The `file` part begins: from here on only the idle timeout and `MAX_UPLOAD_BYTES`
    /// apply.
    pub fn file_started(&self) {
        self.shared.file_started.store(true, Ordering::SeqCst);
    }

    /// Counts a part; 413 past `UPLOAD_MAX_PARTS`.
    pub fn check_part(&self, seen: usize) -> ApiResult<()> {
        if seen > self.max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_parts",
                format!("the upload has more than {} parts", self.max_parts),
            ));
        }
        Ok(())
    }

    /// The error to answer when the body ended because of a limit of this module.
    pub fn error(&self) -> Option<ApiError> {
        match self.shared.tripped.load(Ordering::SeqCst) {
            TOO_LARGE => Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_head_too_large",
                format!(
                    "more than {} bytes before the file's data (preamble, part headers, other fields)",
                    self.head_max
                ),
            )),
            TIMED_OUT => Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!(
                    "the upload did not reach the file's data, or sent nothing, for {} s",
                    self.idle.as_secs()
                ),
            )),
            TOO_SLOW => Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_too_slow",
                format!(
                    "the upload sent less than {} bytes per second over {} s",
                    self.rate.bytes_per_second,
                    self.rate.window.as_secs()
                ),
            )),
            DEADLINE => Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!(
                    "the upload did not end within {} s",
                    self.total.as_secs()
                ),
            )),
            _ => None,
        }
    }
}

struct Reader {
    /// `None` once handed to the lingering drain (see `Drop`).
    inner: Option<axum::body::BodyDataStream>,
    /// The body was read to its end.
    eof: bool,
    limits: UploadLimits,
    head_deadline: Instant,
    /// `UPLOAD_TIMEOUT_SECONDS` from the request's start.
    deadline: Instant,
    head_bytes: u64,
    pending: Bytes,
    meter: RateMeter,
}

impl Reader {
    fn trip(&self, why: u8, message: &'static str) -> Option<Result<Bytes, std::io::Error>> {
        self.limits.shared.tripped.store(why, Ordering::SeqCst);
        Some(Err(std::io::Error::other(message)))
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.head_bytes > 0 && !self.limits.shared.file_started.load(Ordering::SeqCst) {
            // The parser (multer) reads its stream until it is pending before it parses: give
            // it a pending poll after each slice of the head, so that it finds the file part's
            // headers as soon as they are in, not after everything the client sent already.
            tokio::task::yield_now().await;
        }
        let in_file = self.limits.shared.file_started.load(Ordering::SeqCst);
        if self.pending.is_empty() {
            if let Some(stop) = self.refill(in_file).await {
                return stop;
            }
        }
        if in_file {
            return Some(Ok(std::mem::take(&mut self.pending)));
        }
        let piece = self.pending.split_to(self.pending.len().min(SLICE));
        self.head_bytes += piece.len() as u64;
        if self.head_bytes > self.limits.head_max + SLICE as u64 {
            // The parser had the cap and one slice, and still no file data: too large.
            return self.trip(TOO_LARGE, "upload head too large");
        }
        Some(Ok(piece))
    }
}

impl Reader {
    /// Waits for the next chunk into `pending`, within the idle timeout (or the head's
    /// deadline), the request's deadline and, in the file, the rate window. `Some` ends the
    /// stream: the body ended, broke, or a limit tripped.
    async fn refill(&mut self, in_file: bool) -> Option<Option<Result<Bytes, std::io::Error>>> {
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Some(self.trip(DEADLINE, "upload deadline passed"));
            }
            let (mut limit, mut why) = (self.head_deadline, TIMED_OUT);
            if in_file {
                (limit, why) = (now + self.limits.idle, TIMED_OUT);
                if now + self.meter.left() < limit {
                    (limit, why) = (now + self.meter.left(), TOO_SLOW);
                }
            }
            if self.deadline < limit {
                (limit, why) = (self.deadline, DEADLINE);
            }
            let inner = self.inner.as_mut()?;
            let got = tokio::time::timeout_at(limit, inner.next()).await;
            let bytes = match &got {
                Ok(Some(Ok(chunk))) => chunk.len() as u64,
                _ => 0,
            };
            if in_file && !self.meter.record(now.elapsed(), bytes) {
                return Some(self.trip(TOO_SLOW, "upload too slow"));
            }
            return match got {
                // The rate window ended at the rate: wait on in the next one.
                Err(_) if why == TOO_SLOW => continue,
                Err(_) => Some(self.trip(why, "upload timed out")),
                Ok(None) => {
                    self.eof = true;
                    Some(None)
                }
                Ok(Some(Err(e))) => Some(Some(Err(std::io::Error::other(e)))),
                Ok(Some(Ok(chunk))) => {
                    self.pending = chunk;
                    None
                }
            };
        }
    }
}

/// How long, and how much, the rest of a body is read and discarded after the route answered
/// without reading it (an error, a quota): a lingering close, as web servers do, so that the
/// client — still sending — reads the answer instead of a connection reset. Bounded, so an
/// endless body costs at most this much.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

impl Drop for Reader {
    fn drop(&mut self) {
        if self.eof {
            return;
        }
        let (Some(mut inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let deadline = Instant::now() + LINGER;
            let mut drained = 0;
            while drained < LINGER_BYTES {
                match tokio::time::timeout_at(deadline, inner.next()).await {
                    Ok(Some(Ok(chunk))) => drained += chunk.len(),
                    _ => break,
                }
            }
        });
    }
}

/// An upload answered with an error may have left its body unread: the connection is not
/// reused (`Connection: close`, after the lingering drain), so the client never sends its next
/// request behind the rest of this body.
pub async fn close_after_error(mut response: axum::response::Response) -> axum::response::Response {
    if response.status().is_client_error() || response.status().is_server_error() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

impl FromRequest<AppState> for LimitedMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let l = &state.settings.limits;
        let rate = MinRate {
            bytes_per_second: l.fair.upload_min_bytes_per_second,
            window: l.fair.upload_rate_window,
        };
        let limits = UploadLimits {
            shared: Arc::default(),
            idle: state.settings.api.upload_idle_timeout,
            head_max: l.upload_head_max_bytes,
            max_parts: l.upload_max_parts,
            rate,
            total: l.fair.upload_timeout,
        };
        let (parts, body) = req.into_parts();
        let start = Instant::now();
        let reader = Reader {
            inner: Some(body.into_data_stream()),
            eof: false,
            limits: limits.clone(),
            head_deadline: start + state.settings.api.upload_idle_timeout,
            deadline: start + l.fair.upload_timeout,
            head_bytes: 0,
            pending: Bytes::new(),
            meter: RateMeter::new(rate),
        };
        let stream = futures_util::stream::unfold(reader, |mut r| async move {
            r.next().await.map(|item| (item, r))
        });
        let req = Request::from_parts(parts, Body::from_stream(stream));
        let multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::unprocessable("invalid_multipart", e.body_text()))?;
        Ok(LimitedMultipart { multipart, limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_judged_per_window_of_waiting() {
        let mut m = RateMeter::new(MinRate {
            bytes_per_second: 100,
            window: Duration::from_secs(10),
        });
        // 999 bytes over a 10 s window: below 100 per second.
        assert!(m.record(Duration::from_secs(4), 500));
        assert_eq!(m.left(), Duration::from_secs(6));
        assert!(!m.record(Duration::from_secs(6), 499));
        // A fresh window: 1,000 bytes in 10 s is enough, and the next window starts.
        assert!(m.record(Duration::from_secs(9), 0));
        assert!(m.record(Duration::from_secs(1), 1000));
        assert_eq!(m.left(), Duration::from_secs(10));
        // A few bytes now and then never are.
        let mut trickle = true;
        for _ in 0..3 {
            trickle &= m.record(Duration::from_secs(5), 3);
        }
        assert!(!trickle);
    }
}
