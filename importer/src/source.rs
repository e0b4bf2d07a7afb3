//! The reading side of an import, on a blocking thread: streams the object from the
//! checkpoint (reopening it from the current offset when the connection breaks), parses and
//! validates records and hands batches to the loader through a small bounded channel, so
//! that parsing overlaps the database work and memory stays bounded.

use crate::{
    load::{Batch, PreviousEmails},
    reader::{RawRecord, RecordReader},
    validate::{validate, Row},
};
use bulk_import_core::{storage::ObjectReader, Storage};
use std::{
    io::{self, Read},
    time::{Duration, Instant},
};
use tokio::{io::AsyncReadExt, runtime::Handle, sync::mpsc};

/// A batch is handed over when it is full or has been open this long, so that progress moves
/// at least every second even when rows are slow to come.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Reopen attempts after a storage error: about a minute of backoff in all.
const MAX_STORAGE_ATTEMPTS: u32 = 8;

pub struct SourceConfig {
    pub batch_size: usize,
    pub slow_per_row: Duration,
    pub mode: bulk_import_core::ImportMode,
    pub job_id: uuid::Uuid,
}

/// A blocking `Read` over an object in storage that survives broken connections by
/// reopening the object at the offset reached.
struct ResumableRead {
    handle: Handle,
    storage: Storage,
    key: String,
    offset: u64,
    inner: Option<ObjectReader>,
}

impl Read for ResumableRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut attempt = 0;
        loop {
            let result = match self.inner.as_mut() {
                Some(inner) => self
                    .handle
                    .block_on(inner.read(buf))
                    .map_err(|e| e.to_string()),
                None => match self
                    .handle
                    .block_on(self.storage.open_read(&self.key, self.offset))
                {
                    Ok(r) => {
                        self.inner = Some(r);
                        continue;
                    }
                    Err(e) if !e.is_transient() => {
                        return Err(io::Error::other(e.to_string()));
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            match result {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if attempt + 1 < MAX_STORAGE_ATTEMPTS => {
                    attempt += 1;
                    let delay = Duration::from_millis(250 * 2u64.pow(attempt.min(6)));
                    tracing::warn!(error = %e, attempt, ?delay, offset = self.offset, "storage read failed, reopening");
                    self.inner = None;
                    std::thread::sleep(delay);
                }
                Err(e) => return Err(io::Error::other(format!("storage unavailable: {e}"))),
            }
        }
    }
}

/// Reads from `offset`/`line` to the end of the object, sending batches; the last batch
/// (possibly empty) carries the end-of-file checkpoint. Returns early, without error, when
/// the receiver is gone (the loader stopped).
pub fn read_batches(
    handle: Handle,
    storage: Storage,
    key: String,
    offset: u64,
    line: u64,
    config: SourceConfig,
    tx: mpsc::Sender<Batch>,
) -> io::Result<()> {
    let src = ResumableRead {
        handle,
        storage,
        key,
        offset,
        inner: None,
    };
    let mut reader = RecordReader::new(src, offset, line);
    let mut record = RawRecord::default();
    let mut skip_header = offset == 0;
    let mut batch = Batch::default();
    let mut previous = PreviousEmails::default();
    let mut opened = Instant::now();
    loop {
        let more = reader.read(&mut record)?;
        if more {
            if skip_header {
                skip_header = false;
            } else {
                if !config.slow_per_row.is_zero() {
                    std::thread::sleep(config.slow_per_row);
                }
                match validate(&record) {
                    Row::Valid(c) => batch.rows.push(c),
                    Row::Invalid(e) => batch.errors.push(e),
                }
            }
        }
        let full = batch.records() >= config.batch_size
            || (batch.records() > 0
                && batch.records() % 64 == 0
                && opened.elapsed() >= FLUSH_INTERVAL)
            || (!config.slow_per_row.is_zero()
                && batch.records() > 0
                && opened.elapsed() >= FLUSH_INTERVAL);
        if full || !more {
            let (end_offset, end_line) = reader.position();
            batch.end_offset = end_offset;
            batch.end_line = end_line;
            batch.prepare(config.mode, config.job_id, &mut previous);
            if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
            opened = Instant::now();
        }
        if !more {
            return Ok(());
        }
    }
}
