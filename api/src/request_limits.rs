//! Bounds on the body of every request but the upload (docs/reliability.md, Abuse; the upload,
//! `POST /imports`, has its own in `upload_limits`):
//! - at most `JSON_BODY_MAX_BYTES` (default 8 KiB: the JSON bodies the API takes are a few
//!   hundred bytes; routes without a body take none): a declared `Content-Length` over it is
//!   answered 413 `body_too_large` before a byte of the body is read, a chunked body is cut
//!   (413) as soon as it passes the cap, so a stalled body holds at most the cap;
//! - all of it within `REQUEST_TIMEOUT_SECONDS` of the request's head (408 `request_timeout`).
//!   The head itself must arrive within the same time (hyper's header-read timeout, set in
//!   `Application::run_until`), which closes the connection without an answer (hyper has no
//!   response to send before it has a request).
//!
//! Both answers close the connection: its body was not read to the end.

use crate::{error::ApiError, state::AppState};
use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body::Frame;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::time::Sleep;

/// Why a bounded body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimitError {
    TooLarge(u64),
    TimedOut,
}

impl std::fmt::Display for BodyLimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyLimitError::TooLarge(max) => write!(f, "the request body is over {max} bytes"),
            BodyLimitError::TimedOut => f.write_str("the request body did not arrive in time"),
        }
    }
}

impl std::error::Error for BodyLimitError {}

impl From<BodyLimitError> for ApiError {
    fn from(e: BodyLimitError) -> ApiError {
        match e {
            BodyLimitError::TooLarge(max) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {max} bytes"),
            ),
            BodyLimitError::TimedOut => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ),
        }
    }
}

/// The [`BodyLimitError`] behind an extractor's rejection (its `source()` chain), if any.
pub fn cause(e: &(dyn std::error::Error + 'static)) -> Option<BodyLimitError> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(limit) = err.downcast_ref::<BodyLimitError>() {
            return Some(*limit);
        }
        next = err.source();
    }
    None
}

/// A body that ends with an error past `remaining` bytes or past its deadline.
struct BoundedBody {
    inner: Body,
    max: u64,
    remaining: u64,
    deadline: Pin<Box<Sleep>>,
}

impl http_body::Body for BoundedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(BodyLimitError::TooLarge(this.max).into())));
                }
                this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyLimitError::TimedOut.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The upload (and the preview, which reads a file like it) streams gigabytes under limits
/// of its own (`upload_limits`); `POST /imports` with a JSON body (an object already in
/// storage) is bounded like any JSON body.
fn is_upload(req: &Request) -> bool {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    req.method() == Method::POST
        && matches!(req.uri().path(), "/imports" | "/imports/preview")
        && !json
}

fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The middleware: caps and times every request body but the upload's.
pub async fn bound_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_upload(&req) {
        return next.run(req).await;
    }
    let limits = &state.settings.limits;
    let max = limits.json_body_max_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return close(ApiError::from(BodyLimitError::TooLarge(max)).into_response());
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(BoundedBody {
        inner: body,
        max,
        remaining: max,
        deadline: Box::pin(tokio::time::sleep(limits.request_timeout)),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        close(response)
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    fn bounded(chunks: Vec<&'static [u8]>, max: u64, deadline: Duration) -> Body {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        )
        .chain(futures_util::stream::pending());
        Body::new(BoundedBody {
            inner: Body::from_stream(stream),
            max,
            remaining: max,
            deadline: Box::pin(tokio::time::sleep(deadline)),
        })
    }

    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_body_past_the_cap_or_the_deadline_is_an_error_naming_the_limit() {
        let mut body = bounded(vec![b"1234", b"5678", b"9"], 8, Duration::from_secs(60));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(cause(&err), Some(BodyLimitError::TooLarge(8)));

        let mut body = bounded(vec![b"12"], 8, Duration::from_millis(50));
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(cause(&err), Some(BodyLimitError::TimedOut));
    }
}
