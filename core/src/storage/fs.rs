//! Local-directory backend (`STORAGE=fs`): objects are files under `STORAGE_DIR`; writes go to
//! a temporary file renamed into place, so a failed upload leaves nothing behind.

use super::{ObjectReader, Result, StorageError};
use std::{
    io::SeekFrom,
    path::{Component, Path, PathBuf},
};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt};

/// The size of the pieces an upload is written to its file in (per upload in flight).
const WRITE_BUFFER: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: PathBuf) -> Result<FsStore> {
        std::fs::create_dir_all(&root).map_err(|e| {
            StorageError::other(format!(
                "cannot create storage directory {}: {e}",
                root.display()
            ))
        })?;
        Ok(FsStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StorageError::other(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(rel))
    }

    pub async fn size(&self, key: &str) -> Result<u64> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(StorageError::NotFound(key.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn open_read(&self, key: &str, offset: u64) -> Result<ObjectReader> {
        let path = self.path(key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::NotFound(key.into()),
                _ => e.into(),
            })?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).await?;
        }
        Ok(Box::pin(tokio::io::BufReader::with_capacity(
            256 * 1024,
            file,
        )))
    }

    pub async fn put_stream<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        mut body: R,
    ) -> Result<u64> {
        let path = self.path(key)?;
        let parent = path.parent().expect("object paths have a parent");
        tokio::fs::create_dir_all(parent).await?;
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let result = async {
            // Written in large pieces: each write of a `tokio::fs::File` is a trip to the
            // blocking pool, which for `copy`'s 8 KiB pieces cost more than the bytes.
            let file = tokio::fs::File::create(&tmp).await?;
            let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let n = tokio::io::copy(&mut body, &mut file).await?;
            file.flush().await?;
            file.get_ref().sync_all().await?;
            tokio::fs::rename(&tmp, &path).await?;
            // The rename is durable only once the directory entry is on disk.
            tokio::fs::File::open(parent).await?.sync_all().await?;
            Ok::<_, std::io::Error>(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        Ok(result?)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Files whose path relative to the root starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let path = entry.path();
                if entry.file_type().await?.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().into_owned();
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Removes temporary files of writes under `prefix` that were abandoned (the process
    /// died mid-write) more than `age` ago; returns how many.
    pub async fn remove_stale_temporaries(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> Result<usize> {
        let mut removed = 0;
        for key in self.list(prefix).await? {
            let is_tmp = Path::new(&key)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
            if !is_tmp {
                continue;
            }
            let path = self.root.join(&key);
            let old = tokio::fs::metadata(&path)
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old && tokio::fs::remove_file(&path).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub async fn check(&self) -> Result<()> {
        let meta = tokio::fs::metadata(&self.root).await?;
        if !meta.is_dir() {
            return Err(StorageError::other(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        Ok(())
    }
}
