//! Receiving an upload's file part (`POST /imports` and `POST /imports/preview`): streamed
//! through a hashing reader into storage or nowhere, never buffered whole (only its head, when
//! asked for), within the upload's limits (`upload_limits`); and the upload slot every request
//! that streams a file holds (`quota`).

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    upload_limits::UploadLimits,
};
use axum::{extract::Multipart, http::StatusCode};
use bulk_import_core::{
    hashing::HashingReader,
    storage::{StorageError, StreamStop},
};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::io::StreamReader;
use uuid::Uuid;

/// A display name from the client's file name: last path component, no control characters,
/// at most 255 characters. It is only ever shown, never used as a storage key.
pub fn display_name(raw: Option<&str>) -> String {
    let base = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let clean = clean.trim().to_string();
    if clean.is_empty() {
        "upload.csv".into()
    } else {
        clean
    }
}

pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the file is larger than {limit} bytes"),
    )
}

/// What an upload's `file` part was.
pub struct Received {
    pub size: u64,
    pub sha256: String,
    pub file_name: String,
    /// Its first bytes, as many as asked for.
    pub head: Vec<u8>,
}

/// Where a received file goes: into storage under a key, or nowhere (a replay is only hashed).
pub enum Sink<'a> {
    Store(&'a bulk_import_core::Storage, &'a str),
    Discard,
}

/// How much of a file to take, and how long to wait for each piece of it.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    /// Larger files are refused (413 `upload_too_large`).
    pub limit: u64,
    /// Each read must arrive within this (408 `upload_timeout`).
    pub idle: Duration,
    /// Keep a copy of this many first bytes ([`Received::head`]).
    pub head: usize,
}

/// Streams the `file` field through the hasher into `sink`, enforcing `take.limit` as it
/// goes (and the request's own limits, `upload_limits`).
pub async fn receive(
    multipart: &mut Multipart,
    limits: &UploadLimits,
    take: Take,
    sink: Sink<'_>,
) -> ApiResult<Received> {
    let Take { limit, idle, head } = take;
    let mut parts = 0;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                return Err(ApiError::unprocessable(
                    "missing_file",
                    "multipart field `file` is required",
                ))
            }
            Err(e) => {
                return Err(limits
                    .error()
                    .unwrap_or_else(|| ApiError::bad_request("invalid_multipart", e.body_text())))
            }
        };
        parts += 1;
        limits.check_part(parts)?;
        if field.name() != Some("file") {
            continue;
        }
        limits.file_started();
        let file_name = display_name(field.file_name());
        // Each chunk must arrive within `idle`: a stalled client is cut, not waited for. Why
        // the stream stopped travels inside its io::Error (`StreamStop`).
        let stream = futures_util::stream::unfold(field, move |mut field| async move {
            match tokio::time::timeout(idle, field.next()).await {
                Err(_) => Some((Err(StreamStop::Stalled.into_io()), field)),
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), field)),
                Ok(Some(Err(e))) => Some((Err(StreamStop::Broken(e.body_text()).into_io()), field)),
            }
        });
        let stream = Box::pin(stream);
        let mut reader = HashingReader::new(StreamReader::new(stream), limit).keep_head(head);
        let written = match sink {
            Sink::Store(storage, key) => storage.put_stream(key, &mut reader).await,
            Sink::Discard => tokio::io::copy(&mut reader, &mut tokio::io::sink())
                .await
                .map_err(StorageError::from),
        };
        return match written {
            Ok(size) => Ok(Received {
                size,
                sha256: reader.hex_digest(),
                file_name,
                head: reader.head().to_vec(),
            }),
            Err(e) => Err(write_error(e, limits, take)),
        };
    }
}

/// Why the file could not be taken, as the client is told: the limits it broke, a stall, a
/// broken stream, or storage.
fn write_error(e: StorageError, limits: &UploadLimits, take: Take) -> ApiError {
    match e.stream_stop() {
        Some(StreamStop::TooLarge(_)) => return too_large(take.limit),
        _ if limits.error().is_some() => return limits.error().expect("checked"),
        Some(StreamStop::Stalled) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!("the upload sent nothing for {} s", take.idle.as_secs()),
            )
        }
        Some(StreamStop::Broken(_)) => {
            return ApiError::bad_request(
                "invalid_multipart",
                "the upload was interrupted or malformed",
            )
        }
        None => {}
    }
    if e.is_transient() {
        tracing::error!(error = %e, "storage unavailable during upload");
        ApiError::unavailable("storage")
    } else {
        ApiError::internal(e)
    }
}

/// An upload slot for the request (a new upload or a replay), or 429 `too_many_uploads`.
pub fn upload_slot(state: &AppState, user: Uuid, org: i32) -> ApiResult<crate::quota::Slot> {
    use crate::quota::Full;
    state.upload_slots.try_acquire(user, org).map_err(|full| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            match full {
                Full::User => "you have too many uploads in progress; retry when one has finished",
                Full::Org => {
                    "your organization has too many uploads in progress; retry when one has finished"
                }
                Full::Process => "the server has too many uploads in progress; retry shortly",
            },
        );
        e.retry_after = Some(5);
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_cleaned() {
        assert_eq!(display_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(display_name(Some("C:\\Users\\me\\list.csv")), "list.csv");
        assert_eq!(display_name(Some("a\u{0}b\nc.csv")), "abc.csv");
        assert_eq!(display_name(None), "upload.csv");
        assert_eq!(display_name(Some(&"x".repeat(300))).len(), 255);
    }
}
