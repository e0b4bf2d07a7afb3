//! Bounds on connections (docs/reliability.md, Abuse):
//! - at most `MAX_CONNECTIONS` open at once in the process: a connection past it is answered
//!   503 `too_many_connections` and closed;
//! - at most `MAX_CONNECTIONS_PER_ADDR` per client address (an IPv4 address, an IPv6 /64:
//!   [`limit_key`]): past it 429 `too_many_connections`. A connection from a trusted proxy
//!   (`TRUSTED_PROXIES`) carries many clients: it is counted in the total only, and each of
//!   its requests is counted under the client address the proxy names (`client_ip`) until
//!   its answer has been sent ([`per_client_requests`]);
//! - a client that stops reading: a chunk of the answer that cannot be handed to the kernel
//!   within `SEND_TIMEOUT_SECONDS` ends the connection ([`SendDeadline`]), so a download, an
//!   export or an event stream nobody reads releases its buffers.

use crate::client_ip::{client_ip, limit_key};
use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use bulk_import_core::limits::Limits;
use bytes::Bytes;
use ipnet::IpNet;
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

/// The process's open connections, in total and per client address.
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_addr: Mutex<HashMap<IpNet, usize>>,
    max_per_addr: usize,
    trusted_proxies: Vec<IpNet>,
}

/// A client address's share, released when dropped.
pub struct AddrSlot {
    limits: Arc<ConnectionLimits>,
    key: IpNet,
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut map = self.limits.per_addr.lock().expect("not poisoned");
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// An accepted connection's place: held for as long as the connection is open.
pub struct Admitted {
    _total: OwnedSemaphorePermit,
    _addr: Option<AddrSlot>,
}

/// Why a connection or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `MAX_CONNECTIONS`: 503.
    Total,
    /// `MAX_CONNECTIONS_PER_ADDR`: 429.
    PerAddr,
}

impl Refused {
    fn status(self) -> StatusCode {
        match self {
            Refused::Total => StatusCode::SERVICE_UNAVAILABLE,
            Refused::PerAddr => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refused::Total => "the server has too many open connections; retry shortly",
            Refused::PerAddr => "too many open connections from this address; retry shortly",
        }
    }

    /// The answer as a response (for a request behind a trusted proxy).
    pub fn response(self) -> Response {
        let mut e =
            crate::error::ApiError::new(self.status(), "too_many_connections", self.message());
        e.retry_after = Some(1);
        e.into_response()
    }

    /// The answer as raw HTTP/1.1 bytes, written to a connection that is not served.
    fn raw(self) -> Vec<u8> {
        let error =
            crate::error::ApiError::new(self.status(), "too_many_connections", self.message());
        let body = serde_json::to_string(&error.body()).expect("an error body serialises");
        format!(
            "HTTP/1.1 {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
             retry-after: 1\r\nconnection: close\r\n\r\n{body}",
            self.status(),
            body.len()
        )
        .into_bytes()
    }
}

impl ConnectionLimits {
    pub fn new(limits: &Limits) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_addr: Mutex::default(),
            max_per_addr: limits.max_connections_per_addr,
            trusted_proxies: limits.trusted_proxies.clone(),
        })
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        let ip = limit_key(ip).addr();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// One more connection or request of `client`, unless it has its maximum.
    pub fn addr_slot(self: &Arc<Self>, client: IpAddr) -> Result<AddrSlot, Refused> {
        let key = limit_key(client);
        let mut map = self.per_addr.lock().expect("not poisoned");
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_addr {
            return Err(Refused::PerAddr);
        }
        *n += 1;
        Ok(AddrSlot {
            limits: self.clone(),
            key,
        })
    }

    /// Admits a connection from `peer`: counted in the total and, unless the peer is a
    /// trusted proxy, under its address.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refused> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        let addr = if self.is_proxy(peer) {
            None
        } else {
            Some(self.addr_slot(peer)?)
        };
        Ok(Admitted {
            _total: total,
            _addr: addr,
        })
    }
}

/// Answers a refused connection and closes it, within a second whatever the client does.
pub fn refuse(stream: TcpStream, why: Refused) {
    tokio::spawn(async move {
        let mut stream = stream;
        let answer = async {
            stream.write_all(&why.raw()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    });
}

/// Behind a trusted proxy, each request is counted under the client address the proxy
/// names, from its head until its answer's last byte.
pub async fn per_client_requests(req: Request, next: Next) -> Response {
    let limits = req.extensions().get::<Arc<ConnectionLimits>>().cloned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (Some(limits), Some(peer)) = (limits, peer) else {
        return next.run(req).await;
    };
    if !limits.is_proxy(peer) {
        return next.run(req).await;
    }
    let client = client_ip(&limits.trusted_proxies, peer, req.headers());
    let slot = match limits.addr_slot(client) {
        Ok(slot) => slot,
        Err(why) => return why.response(),
    };
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Holding {
            inner: body,
            _slot: slot,
        }),
    )
}

/// A response body that holds a slot until it is dropped.
struct Holding {
    inner: Body,
    _slot: AddrSlot,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes must make progress: a chunk handed to [`poll_write`] that the
/// kernel has not taken whole within `timeout` (the client stopped reading and the socket
/// buffers are full) fails with `TimedOut`, which ends the connection.
///
/// [`poll_write`]: AsyncWrite::poll_write
pub struct SendDeadline<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> SendDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> SendDeadline<T> {
        SendDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The write made no (or partial) progress: pending until the deadline, then an error.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) if n < buf.len() && n > 0 => {
                // Partial progress: the chunk is not sent yet; its deadline keeps running.
                if let Poll::Ready(e) = self.check(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.check(cx).map(Err),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_addr: usize, total: usize, proxies: &str) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(total)),
            per_addr: Mutex::default(),
            max_per_addr: per_addr,
            trusted_proxies: bulk_import_core::limits::parse_cidrs(proxies).unwrap(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_per_address_and_64_and_in_total() {
        let l = limits(2, 5, "10.0.0.1");
        let a = l.admit(ip("2001:db8:0:1::1")).unwrap();
        let _b = l.admit(ip("2001:db8:0:1::2")).unwrap();
        // A third address of the same /64 is the same client.
        assert_eq!(l.admit(ip("2001:db8:0:1::3")).err(), Some(Refused::PerAddr));
        // Another /64 is another client.
        let _c = l.admit(ip("2001:db8:0:2::1")).unwrap();
        drop(a);
        let _d = l.admit(ip("2001:db8:0:1::3")).unwrap();
        // A trusted proxy is counted in the total only.
        let _p1 = l.admit(ip("10.0.0.1")).unwrap();
        let _p2 = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refused::Total));
        assert_eq!(l.per_addr.lock().unwrap().len(), 2);
    }
}
