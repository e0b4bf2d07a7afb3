//! Object storage behind one interface: S3 (Garage, MinIO, AWS) or a local directory.
//! Reads are streamed from a byte offset (for resuming), writes are streamed in parts.

mod fs;
mod s3;

pub use fs::FsStore;
pub use s3::S3Store;

use crate::settings::{Settings, StorageSettings};
use std::{pin::Pin, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt};

pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// The cause of a storage error, kept as its source (never flattened to text).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    /// Network trouble, timeouts, 5xx: worth retrying.
    #[error("storage unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// Reading the data to store, or the local file system, failed. When the data came from
    /// a client, the io::Error carries why its stream stopped (`StreamStop`).
    #[error("storage I/O error: {0}")]
    Io(#[source] std::io::Error),
    #[error("storage error: {message}")]
    Other {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

/// Why a stream handed to `put_stream` stopped, carried inside the `io::Error` the stream
/// returned, so that the writer of the stream learns it from the storage error's source.
#[derive(Debug, thiserror::Error)]
pub enum StreamStop {
    #[error("the data exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the sender sent nothing for too long")]
    Stalled,
    #[error("the sender's stream broke: {0}")]
    Broken(String),
}

impl StreamStop {
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    pub fn unavailable(message: impl Into<String>, source: Option<Cause>) -> StorageError {
        StorageError::Unavailable {
            message: message.into(),
            source,
        }
    }

    pub fn other(message: impl Into<String>) -> StorageError {
        StorageError::Other {
            message: message.into(),
            source: None,
        }
    }

    /// Why the stream being stored stopped, when that is what failed.
    pub fn stream_stop(&self) -> Option<&StreamStop> {
        match self {
            StorageError::Io(e) => e.get_ref()?.downcast_ref::<StreamStop>(),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(e.to_string()),
            _ => StorageError::Io(e),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub enum Backend {
    S3(S3Store),
    Fs(FsStore),
}

/// The storage client: a backend plus the key prefix of this deployment (or test run).
#[derive(Clone, Debug)]
pub struct Storage {
    backend: Backend,
    prefix: String,
}

impl Storage {
    pub fn from_settings(settings: &Settings) -> Result<Storage> {
        let backend = match &settings.storage {
            StorageSettings::Fs { dir } => Backend::Fs(FsStore::new(dir.clone())?),
            s3 @ StorageSettings::S3 { .. } => Backend::S3(S3Store::new(s3)),
        };
        Ok(Storage {
            backend,
            prefix: settings.key_prefix.clone(),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Size of an object in bytes; `NotFound` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let key = self.full(key);
        match &self.backend {
            Backend::S3(s) => s.size(&key).await,
            Backend::Fs(f) => f.size(&key).await,
        }
    }

    /// Streams an object from `offset` to its end.
    pub async fn open_read(&self, key: &str, offset: u64) -> Result<ObjectReader> {
        let key = self.full(key);
        match &self.backend {
            Backend::S3(s) => s.open_read(&key, offset).await,
            Backend::Fs(f) => f.open_read(&key, offset).await,
        }
    }

    /// Writes an object from a stream without holding it in memory; either the whole object
    /// is stored or nothing is (a failed write leaves no partial object behind).
    pub async fn put_stream<R: AsyncRead + Unpin + Send>(&self, key: &str, body: R) -> Result<u64> {
        let key = self.full(key);
        match &self.backend {
            Backend::S3(s) => s.put_stream(&key, body).await,
            Backend::Fs(f) => f.put_stream(&key, body).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let key = self.full(key);
        match &self.backend {
            Backend::S3(s) => s.delete(&key).await,
            Backend::Fs(f) => f.delete(&key).await,
        }
    }

    /// A URL a client can GET without credentials until `ttl` passes. `None` for the
    /// directory backend, whose downloads the API signs and serves itself.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        let key = self.full(key);
        match &self.backend {
            Backend::S3(s) => s.presign_get(&key, ttl).await.map(Some),
            Backend::Fs(_) => Ok(None),
        }
    }

    /// Keys under `prefix` (relative to this deployment's prefix), temporary files included;
    /// for tests and operations, not for hot paths.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full(prefix);
        let keys = match &self.backend {
            Backend::S3(s) => s.list(&full).await?,
            Backend::Fs(f) => f.list(&full).await?,
        };
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .collect())
    }

    /// Abandoned partial writes under this deployment's prefix older than `age`: incomplete
    /// S3 multipart uploads are aborted, temporary files of the directory backend removed.
    /// Returns how many.
    pub async fn clean_abandoned_uploads(&self, age: Duration) -> Result<usize> {
        match &self.backend {
            Backend::S3(s) => s.abort_stale_uploads(&self.prefix, age).await,
            Backend::Fs(f) => f.remove_stale_temporaries(&self.prefix, age).await,
        }
    }

    /// Readiness: the bucket (or directory) answers.
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::S3(s) => s.check().await,
            Backend::Fs(f) => f.check().await,
        }
    }

    /// Reads a whole object into memory; for tests and small objects only.
    pub async fn read_to_vec(&self, key: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_read(key, 0).await?.read_to_end(&mut out).await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fs_round_trip_with_offset_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage {
            backend: Backend::Fs(FsStore::new(dir.path().to_path_buf()).unwrap()),
            prefix: "run-1/".into(),
        };
        let n = storage
            .put_stream("a/b.csv", &b"hello world"[..])
            .await
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(storage.size("a/b.csv").await.unwrap(), 11);
        assert!(dir.path().join("run-1/a/b.csv").exists());
        let mut tail = String::new();
        storage
            .open_read("a/b.csv", 6)
            .await
            .unwrap()
            .read_to_string(&mut tail)
            .await
            .unwrap();
        assert_eq!(tail, "world");
        assert!(matches!(
            storage.size("missing").await,
            Err(StorageError::NotFound(_))
        ));
        storage.delete("a/b.csv").await.unwrap();
        assert!(matches!(
            storage.size("a/b.csv").await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn fs_refuses_keys_escaping_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().to_path_buf()).unwrap();
        assert!(store.size("../etc/passwd").await.is_err());
        assert!(store.size("/etc/passwd").await.is_err());
    }
}
