//! An `AsyncRead` adapter that hashes (SHA-256) and counts what passes through it, and can
//! refuse to pass more than a byte limit: uploads are fingerprinted while they stream.

use sha2::{Digest, Sha256};
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, ReadBuf};

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R> HashingReader<R> {
    /// `limit`: reading more than this many bytes fails with an error and sets the flag
    /// returned by [`HashingReader::limit_flag`].
    pub fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            exceeded: Arc::default(),
        }
    }

    pub fn limit_flag(&self) -> Arc<AtomicBool> {
        self.exceeded.clone()
    }

    pub fn bytes(&self) -> u64 {
        self.count
    }

    /// Hex SHA-256 of everything read so far.
    pub fn hex_digest(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                this.count += new.len() as u64;
                if this.count > this.limit {
                    // An erroring read must not hand out bytes.
                    buf.set_filled(before);
                    this.exceeded.store(true, Ordering::SeqCst);
                    return Poll::Ready(Err(io::Error::other(format!(
                        "upload exceeds the limit of {} bytes",
                        this.limit
                    ))));
                }
                this.hasher.update(new);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hashes_and_counts() {
        let mut r = HashingReader::new(&b"abc"[..], 10);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(r.bytes(), 3);
        assert_eq!(
            r.hex_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn refuses_past_the_limit() {
        let mut r = HashingReader::new(&b"abcdef"[..], 4);
        let flag = r.limit_flag();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).await.is_err());
        assert!(flag.load(Ordering::SeqCst));
    }
}
