//! An `AsyncRead` adapter that hashes (SHA-256) and counts what passes through it, and can
//! refuse to pass more than a byte limit: uploads are fingerprinted while they stream.

use crate::storage::StreamStop;
use sha2::{Digest, Sha256};
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, ReadBuf};

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R> HashingReader<R> {
    /// `limit`: reading more than this many bytes fails with an error carrying
    /// [`StreamStop::TooLarge`] (see `StorageError::stream_stop`).
    pub fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
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
                    return Poll::Ready(Err(StreamStop::TooLarge(this.limit).into_io()));
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
        let mut out = Vec::new();
        let err = crate::storage::StorageError::from(r.read_to_end(&mut out).await.unwrap_err());
        assert!(
            matches!(err.stream_stop(), Some(StreamStop::TooLarge(4))),
            "{err:?}"
        );
    }
}
