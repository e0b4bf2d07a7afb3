//! An `AsyncRead` adapter that hashes (SHA-256) and counts what passes through it, and can
//! refuse to pass more than a byte limit: uploads are fingerprinted while they stream. It can
//! also keep a copy of the first bytes (the file's head, whose header the API checks).

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
    head: Vec<u8>,
    head_cap: usize,
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
            head: Vec::new(),
            head_cap: 0,
        }
    }

    /// Keeps a copy of the first `cap` bytes read ([`HashingReader::head`]).
    pub fn keep_head(mut self, cap: usize) -> Self {
        self.head_cap = cap;
        self
    }

    /// The first bytes read, up to the cap given to [`HashingReader::keep_head`].
    pub fn head(&self) -> &[u8] {
        &self.head
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
                let room = this.head_cap.saturating_sub(this.head.len());
                this.head.extend_from_slice(&new[..new.len().min(room)]);
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
        assert!(r.head().is_empty());
        assert_eq!(
            r.hex_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn keeps_the_head_it_is_asked_for() {
        let mut r = HashingReader::new(&b"abcdef"[..], 10).keep_head(4);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!((r.head(), r.bytes()), (&b"abcd"[..], 6));
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
