//! The reading side of an import, on a blocking thread: streams the object from the
//! checkpoint (reopening it from the current offset when the connection breaks), parses and
//! validates records and hands batches to the loader through a small bounded channel, so
//! that parsing overlaps the database work and memory stays bounded.

use crate::{
    batch::{Batch, PreviousEmails},
    decode::{Gunzip, Transcode},
    dialect,
    reader::{RawRecord, RecordReader},
    validate::{validate_with, Columns, Row, COLUMNS},
};
use bulk_import_core::{options::Dialect, retry::Policy, storage::ObjectReader, Storage};
use std::{
    io::{self, Read},
    time::{Duration, Instant},
};
use tokio::{io::AsyncReadExt, runtime::Handle, sync::mpsc};

/// A batch is handed over when it is full or has been open this long, so that progress moves
/// at least every second even when rows are slow to come.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Reopening after a storage error: 0.5 s doubling to 16 s, jittered, 7 times (about a
/// minute in all), then the run stops and a later run resumes from the checkpoint.
const STORAGE_RETRY: Policy = Policy {
    first_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(16),
    retries: 7,
};

pub struct SourceConfig {
    pub batch_size: usize,
    pub slow_per_row: Duration,
    pub mode: bulk_import_core::ImportMode,
    pub job_id: uuid::Uuid,
    /// The job's organization (from the job row).
    pub org_id: i32,
    pub dialect: Dialect,
    /// Size of the stored object.
    pub size: u64,
    /// gzip: the most the file may decompress to (`MAX_DECOMPRESSED_BYTES`), and at most this
    /// many times its stored size (`MAX_DECOMPRESSION_RATIO`); past either the job fails
    /// `file_too_large`.
    pub max_decompressed: u64,
    pub max_ratio: u64,
}

impl SourceConfig {
    /// The decompressed size a gzip file of this size may reach.
    pub fn expansion_limit(&self) -> u64 {
        self.max_decompressed
            .min(self.size.saturating_mul(self.max_ratio))
    }
}

/// Where reading starts: the job's checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Offset in the stored object (for gzip: compressed bytes consumed, for progress).
    pub offset: u64,
    /// gzip: offset in the decompressed stream.
    pub stream_offset: Option<u64>,
    pub line: u64,
}

/// A batch boundary: where the next record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    offset: u64,
    stream_offset: Option<u64>,
}

/// The stored object as the CSV reader sees it: UTF-8 bytes, through a decompressor and a
/// decoder when the dialect needs them.
enum Input {
    Plain(ResumableRead),
    Text(Transcode<ResumableRead>),
    Gzip(Gunzip<ResumableRead>),
    GzipText(Transcode<Gunzip<ResumableRead>>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(r) => r.read(buf),
            Input::Text(r) => r.read(buf),
            Input::Gzip(r) => r.read(buf),
            Input::GzipText(r) => r.read(buf),
        }
    }
}

fn gzip_checkpoint(g: &mut Gunzip<ResumableRead>, pos: u64, size: u64) -> Checkpoint {
    // The compressed position is where the decompressor had got to, which is ahead of the
    // record boundary; it stays below the size until the end, so that `offset = size`
    // means the end of the file.
    let offset = if g.is_end(pos) {
        size
    } else {
        g.compressed_at(pos).min(size.saturating_sub(1))
    };
    Checkpoint {
        offset,
        stream_offset: Some(pos),
    }
}

impl Input {
    /// The checkpoint for the CSV reader's position `pos` (just after a record).
    fn checkpoint(&mut self, pos: u64, size: u64) -> io::Result<Checkpoint> {
        Ok(match self {
            Input::Plain(_) => Checkpoint {
                offset: pos,
                stream_offset: None,
            },
            Input::Text(t) => Checkpoint {
                offset: t.map(pos)?,
                stream_offset: None,
            },
            Input::Gzip(g) => gzip_checkpoint(g, pos, size),
            Input::GzipText(t) => {
                let pos = t.map(pos)?;
                gzip_checkpoint(t.inner_mut(), pos, size)
            }
        })
    }
}

/// The record reader for `dialect` from `start`, over the object read from storage.
fn open_reader(
    handle: Handle,
    storage: Storage,
    key: String,
    start: Start,
    dialect: &Dialect,
    expansion_limit: u64,
) -> io::Result<RecordReader<Input>> {
    let (encoding, _) = dialect::encoding_of(dialect, &[]);
    let utf8 = encoding == encoding_rs::UTF_8;
    let delimiter = dialect.delimiter_byte();
    let at = |offset| ResumableRead {
        handle: handle.clone(),
        storage: storage.clone(),
        key: key.clone(),
        offset,
        inner: None,
    };
    Ok(if dialect.is_gzip() {
        let stream = start.stream_offset.unwrap_or(0);
        let mut g = Gunzip::new(at(0)).limit(expansion_limit);
        g.skip_to(stream)?;
        if utf8 {
            RecordReader::with_dialect(Input::Gzip(g), stream, start.line, stream == 0, delimiter)
        } else {
            let t = Transcode::new(g, stream, encoding, stream == 0)?;
            RecordReader::with_dialect(Input::GzipText(t), 0, start.line, false, delimiter)
        }
    } else if utf8 {
        let r = at(start.offset);
        RecordReader::with_dialect(
            Input::Plain(r),
            start.offset,
            start.line,
            start.offset == 0,
            delimiter,
        )
    } else {
        let t = Transcode::new(at(start.offset), start.offset, encoding, start.offset == 0)?;
        RecordReader::with_dialect(Input::Text(t), 0, start.line, false, delimiter)
    })
}

/// The columns a dialect maps.
pub fn columns_of(dialect: &Dialect) -> Columns {
    let mut index = [None; 5];
    for c in &dialect.columns {
        if let Some(i) = COLUMNS.iter().position(|&n| n == c.column) {
            index[i] = Some(c.position - 1);
        }
    }
    Columns {
        index,
        fields: dialect.fields,
    }
}

/// The first bytes of the object for dialect detection (decompressed when it is gzip):
/// (sample, whether it is the whole file, whether the object is gzip).
pub fn sample(handle: Handle, storage: Storage, key: String) -> io::Result<(Vec<u8>, bool, bool)> {
    let at0 = || ResumableRead {
        handle: handle.clone(),
        storage: storage.clone(),
        key: key.clone(),
        offset: 0,
        inner: None,
    };
    let limit = dialect::SAMPLE_BYTES as u64;
    let mut sample = Vec::with_capacity(dialect::SAMPLE_BYTES);
    at0().take(limit).read_to_end(&mut sample)?;
    let gzip = dialect::is_gzip(&sample);
    if gzip {
        sample.clear();
        Gunzip::new(at0()).take(limit).read_to_end(&mut sample)?;
    }
    let whole = (sample.len() as u64) < limit;
    Ok((sample, whole, gzip))
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
        let mut backoff = STORAGE_RETRY.backoff();
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
                Err(e) => match backoff.next() {
                    Some(delay) => {
                        tracing::warn!(error = %e, ?delay, offset = self.offset, "storage read failed, reopening");
                        self.inner = None;
                        std::thread::sleep(delay);
                    }
                    None => return Err(io::Error::other(format!("storage unavailable: {e}"))),
                },
            }
        }
    }
}

/// Reads from `start` to the end of the object, sending batches; the last batch (possibly
/// empty) carries the end-of-file checkpoint. Returns early, without error, when the
/// receiver is gone (the loader stopped). One piece: the loop's state (the batch open, its
/// timer, the last checkpoint) is shared by every step of a record.
pub fn read_batches(
    handle: Handle,
    storage: Storage,
    key: String,
    start: Start,
    config: SourceConfig,
    tx: mpsc::Sender<Batch>,
) -> io::Result<()> {
    let limit = config.expansion_limit();
    let mut reader = open_reader(handle, storage, key, start, &config.dialect, limit)?;
    let columns = columns_of(&config.dialect);
    let mut record = RawRecord::default();
    let mut skip_header = start.offset == 0;
    let mut batch = Batch::default();
    // Sized from the bytes left at ~40 bytes per row.
    let mut previous =
        PreviousEmails::new(config.mode, config.size.saturating_sub(start.offset) / 40);
    let mut opened = Instant::now();
    // Checkpoints must grow with every batch (the loader's guard compares them); a gzip
    // checkpoint only moves when the decompressor has consumed more of the object, so a
    // batch may have to grow until it has.
    let mut last_offset = start.offset;
    loop {
        let more = reader.read(&mut record)?;
        // Mapped after every record, before the reader reads on: the layers below forget
        // positions behind what was read (`Transcode::map`), so that memory does not grow
        // with what lies between two batch boundaries.
        let (position, end_line) = reader.position();
        let at = reader.source_mut().checkpoint(position, config.size)?;
        if more {
            if skip_header {
                skip_header = false;
            } else {
                if !config.slow_per_row.is_zero() {
                    std::thread::sleep(config.slow_per_row);
                }
                match validate_with(&record, &columns) {
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
            if more && at.offset <= last_offset {
                continue;
            }
            last_offset = at.offset;
            batch.end_offset = at.offset;
            batch.end_stream_offset = at.stream_offset;
            batch.end_line = end_line;
            batch.prepare(config.mode, (config.job_id, config.org_id), &mut previous);
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
