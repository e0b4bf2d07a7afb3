//! Caps and timeouts on the whole multipart upload request (DESIGN.md §8), chunked or not.
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
//! and the file is capped by `MAX_UPLOAD_BYTES` as it streams (413). The route answers at once
//! and releases the Idempotency-Key on any of these.

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
            _ => None,
        }
    }
}

struct Reader {
    inner: axum::body::BodyDataStream,
    limits: UploadLimits,
    head_deadline: Instant,
    head_bytes: u64,
    pending: Bytes,
}

impl Reader {
    fn trip(&self, why: u8, message: &'static str) -> Option<Result<Bytes, std::io::Error>> {
        self.limits.shared.tripped.store(why, Ordering::SeqCst);
        Some(Err(std::io::Error::other(message)))
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let in_file = self.limits.shared.file_started.load(Ordering::SeqCst);
        if self.pending.is_empty() {
            let deadline = if in_file {
                Instant::now() + self.limits.idle
            } else {
                self.head_deadline
            };
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => return self.trip(TIMED_OUT, "upload timed out"),
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(Err(std::io::Error::other(e))),
                Ok(Some(Ok(chunk))) => self.pending = chunk,
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

impl FromRequest<AppState> for LimitedMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let l = &state.settings.limits;
        let limits = UploadLimits {
            shared: Arc::default(),
            idle: state.settings.api.upload_idle_timeout,
            head_max: l.upload_head_max_bytes,
            max_parts: l.upload_max_parts,
        };
        let (parts, body) = req.into_parts();
        let reader = Reader {
            inner: body.into_data_stream(),
            limits: limits.clone(),
            head_deadline: Instant::now() + state.settings.api.upload_idle_timeout,
            head_bytes: 0,
            pending: Bytes::new(),
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
