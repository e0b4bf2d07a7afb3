//! The layers between the stored object and the CSV reader, each of which can say where a
//! line boundary of its output lies in its input, so that checkpoints stay offsets into the
//! stored object (or, for gzip, into the decompressed stream) whatever the encoding.
//!
//! - [`Transcode`]: any encoding `encoding_rs` knows → UTF-8. Its input is cut into segments
//!   that end just after a CR or LF (for UTF-16, a CR or LF code unit); each segment is
//!   decoded on its own, and the output position after it is recorded with the input position
//!   after it (a "mark"). The CSV reader's checkpoints always fall just after a CR or LF (or
//!   at the end), so each one has a mark. A resumed import starts a fresh decoder at the
//!   checkpoint: every encoding `encoding_rs` decodes is back in its initial state after a
//!   line break (ISO-2022-JP only if the writer returned to ASCII before it, as encoders do).
//!   Marks behind what the consumer has read are forgotten at each read, so that memory does
//!   not grow with the line breaks (blank lines, a quoted field of many lines) between two
//!   checkpoints: the consumer maps each checkpoint before it reads on ([`Transcode::map`]).
//! - [`Gunzip`]: gzip (several members allowed) → the decompressed stream. Deflate cannot be
//!   entered in the middle, so a resume decompresses from the start and skips to the
//!   checkpoint ([`Gunzip::skip_to`]). It records, per read, how many compressed bytes were
//!   consumed, which is what progress shows (the last [`GUNZIP_MARKS`] reads: an older
//!   position reads as a little further on). It stops with [`ExpansionLimit`] past the
//!   decompressed size it is allowed ([`Gunzip::limit`]).

use encoding_rs::{Decoder, Encoding, UTF_16BE, UTF_16LE};
use std::{
    collections::VecDeque,
    io::{self, BufReader, Read},
};

const IN_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Units {
    /// ASCII-compatible encodings: CR and LF are the bytes 0x0D and 0x0A, never part of a
    /// multi-byte character.
    Bytes,
    Utf16Le,
    Utf16Be,
}

/// Decodes its input to UTF-8 (malformed input becomes U+FFFD, as WHATWG decoders do),
/// remembering where each line break of the output lies in the input.
pub struct Transcode<R> {
    inner: R,
    decoder: Decoder,
    units: Units,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Input position of `inbuf[in_start]`.
    in_pos: u64,
    out: Vec<u8>,
    out_start: usize,
    /// Output bytes produced so far (the position after `out`).
    produced: u64,
    /// (output position, input position) after each line break, in order.
    marks: VecDeque<(u64, u64)>,
    eof: bool,
    finished: bool,
}

impl<R: Read> Transcode<R> {
    /// `inner` yields the input from input position `start` (just after a line break, or the
    /// start of the file). At the start of the file (`strip_bom`), a BOM of `encoding` is
    /// dropped. Output positions start at 0.
    pub fn new(
        inner: R,
        start: u64,
        encoding: &'static Encoding,
        strip_bom: bool,
    ) -> io::Result<Self> {
        let units = if encoding == UTF_16LE {
            Units::Utf16Le
        } else if encoding == UTF_16BE {
            Units::Utf16Be
        } else {
            Units::Bytes
        };
        let mut t = Transcode {
            inner,
            decoder: encoding.new_decoder_without_bom_handling(),
            units,
            inbuf: vec![0; IN_CHUNK],
            in_start: 0,
            in_end: 0,
            in_pos: start,
            out: Vec::with_capacity(IN_CHUNK * 3),
            out_start: 0,
            produced: 0,
            marks: VecDeque::new(),
            eof: false,
            finished: false,
        };
        if strip_bom {
            while t.in_end < 3 {
                let n = t.read_inner()?;
                if n == 0 {
                    t.eof = true;
                    break;
                }
            }
            if let Some((e, n)) = Encoding::for_bom(&t.inbuf[..t.in_end]) {
                if e == encoding {
                    t.in_start = n;
                    t.in_pos += n as u64;
                }
            }
        }
        t.marks.push_back((0, t.in_pos));
        t.decode_buffered();
        Ok(t)
    }

    /// The layer below.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads more input after what is buffered; returns the bytes read.
    fn read_inner(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.inbuf[self.in_end..]) {
                Ok(n) => {
                    self.in_end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The input position of output position `pos`, which must lie just after a line break
    /// (or at the start or the end). Positions must be asked for in increasing order, and
    /// never for one before what had been handed out when `read` was last called: a call to
    /// `read` says that everything handed out before has been consumed, and checkpoints in it
    /// mapped (the CSV reader reads only once its buffer is consumed, and `read_batches` maps
    /// the position after every record).
    pub fn map(&mut self, pos: u64) -> io::Result<u64> {
        while self.marks.front().is_some_and(|&(o, _)| o < pos) {
            self.marks.pop_front();
        }
        match self.marks.front() {
            Some(&(o, i)) if o == pos => Ok(i),
            _ => Err(io::Error::other(format!(
                "decoded position {pos} is not at a line boundary"
            ))),
        }
    }

    fn decode(&mut self, end: usize, last: bool) {
        let src = &self.inbuf[self.in_start..end];
        let old = self.out.len();
        let room = self
            .decoder
            .max_utf8_buffer_length(src.len())
            .expect("segment length fits");
        self.out.resize(old + room, 0);
        let (_, read, written, _) = self.decoder.decode_to_utf8(src, &mut self.out[old..], last);
        debug_assert_eq!(read, src.len());
        self.out.truncate(old + written);
        self.produced += written as u64;
        self.in_pos += read as u64;
        self.in_start += read;
    }

    /// The end (exclusive) of the first line break in `inbuf[from..in_end]`, if complete.
    fn next_break(&self, from: usize) -> Option<usize> {
        let buf = &self.inbuf[from..self.in_end];
        match self.units {
            Units::Bytes => buf
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map(|i| from + i + 1),
            Units::Utf16Le | Units::Utf16Be => {
                // Code units start at even input positions.
                let first = ((self.in_pos + (from - self.in_start) as u64) % 2) as usize;
                let mut i = first;
                while i + 1 < buf.len() {
                    let (lo, hi) = if self.units == Units::Utf16Le {
                        (buf[i], buf[i + 1])
                    } else {
                        (buf[i + 1], buf[i])
                    };
                    if hi == 0 && (lo == b'\n' || lo == b'\r') {
                        return Some(from + i + 2);
                    }
                    i += 2;
                }
                None
            }
        }
    }

    /// Decodes what is buffered, segment by segment, into `out`.
    fn decode_buffered(&mut self) {
        while self.in_start < self.in_end {
            match self.next_break(self.in_start) {
                Some(end) => {
                    self.decode(end, false);
                    self.marks.push_back((self.produced, self.in_pos));
                }
                None => {
                    // Keep a trailing odd byte of UTF-16 so that a line break split between
                    // two reads is still seen whole.
                    let keep = match self.units {
                        Units::Bytes => 0,
                        _ => ((self.in_pos + (self.in_end - self.in_start) as u64) % 2) as usize,
                    };
                    let end = self.in_end - keep;
                    if end > self.in_start {
                        self.decode(end, false);
                    }
                    return;
                }
            }
        }
    }
}

impl<R: Read> Read for Transcode<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // What was handed out is consumed (see `map`): its marks are never asked for again,
        // except the one at its end. So at most a buffer's worth of marks is kept.
        let handed = self.produced - (self.out.len() - self.out_start) as u64;
        while self.marks.front().is_some_and(|&(o, _)| o < handed) {
            self.marks.pop_front();
        }
        loop {
            if self.out_start < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_start);
                buf[..n].copy_from_slice(&self.out[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            self.out.clear();
            self.out_start = 0;
            if self.eof {
                let end = self.in_end;
                self.decode(end, true);
                self.marks.push_back((self.produced, self.in_pos));
                self.finished = true;
                continue;
            }
            // Keep what is left (at most one byte) at the front, then read more.
            self.inbuf.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
            if self.read_inner()? == 0 {
                self.eof = true;
            } else {
                self.decode_buffered();
            }
        }
    }
}

/// A `Read` that counts the bytes it has yielded.
pub struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Output handed out per read, so that the compressed position is known at this grain.
const GUNZIP_GRAIN: usize = 16 * 1024;
/// Reads whose compressed position is kept: 16 MiB of output at the full grain, far more than
/// the layers above buffer, so progress stays exact unless a batch spans more than that.
pub const GUNZIP_MARKS: usize = 1024;

/// A gzip stream decompressed past the size it was allowed (`Gunzip::limit`): the job fails
/// `file_too_large`.
#[derive(Debug, thiserror::Error)]
#[error("the decompressed file is larger than {limit} bytes")]
pub struct ExpansionLimit {
    pub limit: u64,
}

/// Decompresses a gzip object read from its start, recording the compressed bytes consumed
/// for the decompressed positions it hands out.
pub struct Gunzip<R: Read> {
    dec: flate2::bufread::MultiGzDecoder<BufReader<Counting<R>>>,
    /// Decompressed position of the next byte.
    pos: u64,
    /// Largest decompressed size allowed.
    limit: u64,
    /// (decompressed position after a read, compressed bytes consumed by then).
    marks: VecDeque<(u64, u64)>,
    eof: bool,
}

impl<R: Read> Gunzip<R> {
    /// `inner` yields the stored object from its first byte.
    pub fn new(inner: R) -> Self {
        let counting = Counting { inner, count: 0 };
        Gunzip {
            dec: flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(8 * 1024, counting)),
            pos: 0,
            limit: u64::MAX,
            marks: VecDeque::from([(0, 0)]),
            eof: false,
        }
    }

    /// Fails reads with [`ExpansionLimit`] once more than `limit` bytes are decompressed.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Counts `n` more decompressed bytes, failing past the limit.
    fn advance(&mut self, n: usize) -> io::Result<()> {
        self.pos += n as u64;
        if self.pos > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ExpansionLimit { limit: self.limit },
            ));
        }
        Ok(())
    }

    /// How much of a read of `len` bytes to ask for: one byte past the limit at most, which
    /// is enough to see that it was passed.
    fn room(&self, len: usize) -> usize {
        let left = self.limit.saturating_sub(self.pos).saturating_add(1);
        len.min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    fn consumed(&self) -> u64 {
        let buffered = self.dec.get_ref();
        buffered.get_ref().count - buffered.buffer().len() as u64
    }

    /// Decompresses and drops everything before decompressed position `target` (a resume).
    pub fn skip_to(&mut self, target: u64) -> io::Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        while self.pos < target {
            let want = self.room(scratch.len().min((target - self.pos) as usize));
            let n = self.dec.read(&mut scratch[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the decompressed file ends before its checkpoint",
                ));
            }
            self.advance(n)?;
        }
        self.marks.clear();
        self.marks.push_back((self.pos, self.consumed()));
        Ok(())
    }

    /// Compressed bytes consumed when decompressed position `pos` had been produced (at
    /// least as far as `pos`'s bytes need). Positions must be asked for in increasing order.
    pub fn compressed_at(&mut self, pos: u64) -> u64 {
        while self.marks.len() > 1 && self.marks[0].0 < pos {
            self.marks.pop_front();
        }
        self.marks.front().map(|&(_, c)| c).unwrap_or(0)
    }

    /// Whether the decompressed stream has ended and `pos` is its end.
    pub fn is_end(&self, pos: u64) -> bool {
        self.eof && pos == self.pos
    }
}

impl<R: Read> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.room(buf.len().min(GUNZIP_GRAIN));
        let n = self.dec.read(&mut buf[..want])?;
        if n == 0 {
            self.eof = true;
        }
        self.advance(n)?;
        let consumed = self.consumed();
        if self.marks.len() >= GUNZIP_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((self.pos, consumed));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{RawRecord, RecordReader};

    /// Reads every record through a transcoder (from `start`), returning each record's
    /// fields and the input position of the checkpoint after it.
    fn records(input: &[u8], start: u64, enc: &'static Encoding) -> Vec<(Vec<String>, u64)> {
        let t = Transcode::new(&input[start as usize..], start, enc, start == 0).unwrap();
        let mut r = RecordReader::with_dialect(t, 0, 1, false, b';');
        let mut rec = RawRecord::default();
        let mut out = vec![];
        while r.read(&mut rec).unwrap() {
            let fields = (0..rec.len())
                .map(|i| String::from_utf8(rec.field(i).unwrap().to_vec()).unwrap())
                .collect();
            let pos = r.position().0;
            out.push((fields, r.source_mut().map(pos).unwrap()));
        }
        out
    }

    #[test]
    fn checkpoints_map_to_input_offsets_and_resume_the_same() {
        let text = "Email;Имя\r\nivan@x.ru;\"Иван\r\nИванович\"\r\n\r\nb@x.ru;Ёж\nlast@x.ru;Я";
        let cases: Vec<(&'static Encoding, Vec<u8>, usize)> = vec![
            (
                encoding_rs::WINDOWS_1251,
                encoding_rs::WINDOWS_1251.encode(text).0.into_owned(),
                0,
            ),
            (
                encoding_rs::KOI8_R,
                encoding_rs::KOI8_R.encode(text).0.into_owned(),
                0,
            ),
            (
                UTF_16LE,
                [0xFF, 0xFE]
                    .into_iter()
                    .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
                    .collect(),
                2,
            ),
            (
                UTF_16BE,
                [0xFE, 0xFF]
                    .into_iter()
                    .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
                    .collect(),
                2,
            ),
            (
                encoding_rs::SHIFT_JIS,
                encoding_rs::SHIFT_JIS
                    .encode("a;ソ表\nb;能\n")
                    .0
                    .into_owned(),
                0,
            ),
        ];
        for (enc, bytes, _bom) in cases {
            let all = records(&bytes, 0, enc);
            assert!(all.len() >= 2, "{}", enc.name());
            assert_eq!(all.last().unwrap().1, bytes.len() as u64);
            for (i, (_, at)) in all.iter().enumerate() {
                let rest = records(&bytes, *at, enc);
                assert_eq!(
                    rest,
                    all[i + 1..].to_vec(),
                    "{} resumed at {at}",
                    enc.name()
                );
            }
            if enc == encoding_rs::WINDOWS_1251 {
                assert_eq!(all[1].0, ["ivan@x.ru", "Иван\r\nИванович"]);
                assert_eq!(all[2].0, ["b@x.ru", "Ёж"]);
            }
        }
    }

    #[test]
    fn utf16_line_breaks_split_across_reads_are_seen() {
        /// Yields one byte per read.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let bytes: Vec<u8> = "a\tb\r\nc\td\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let t = Transcode::new(Trickle(&bytes), 0, UTF_16LE, true).unwrap();
        let mut r = RecordReader::with_dialect(t, 0, 1, false, b'\t');
        let mut rec = RawRecord::default();
        let mut ends = vec![];
        while r.read(&mut rec).unwrap() {
            let pos = r.position().0;
            ends.push(r.source_mut().map(pos).unwrap());
        }
        assert_eq!(ends, [10, 20]);
    }

    #[test]
    fn marks_are_forgotten_as_the_consumer_reads_on() {
        // 4 MiB of line breaks (blank lines, or one quoted field of many lines): a reader
        // consumes them without a checkpoint in between. What is kept is at most what one
        // decoded chunk holds, not a mark per line break of the file.
        for (enc, unit) in [
            (encoding_rs::WINDOWS_1251, &b"\n"[..]),
            (encoding_rs::WINDOWS_1251, &b"\r"[..]),
            (UTF_16LE, &b"\r\0\n\0"[..]),
        ] {
            let input = unit.repeat(4 * 1024 * 1024 / unit.len());
            let mut t = Transcode::new(&input[..], 0, enc, false).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut most = 0;
            while t.read(&mut buf).unwrap() > 0 {
                most = most.max(t.marks.len());
            }
            assert!(most <= IN_CHUNK + 2, "{}: {most} marks kept", enc.name());
            // The end is still where it was.
            let end = t.produced;
            assert_eq!(t.map(end).unwrap(), input.len() as u64);
        }
    }

    #[test]
    fn gunzip_fails_past_its_limit_and_keeps_a_bounded_number_of_marks() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let plain = vec![b'\n'; 8 * 1024 * 1024];
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&plain).unwrap();
        let gz = enc.finish().unwrap();
        let mut all = vec![];
        let mut g = Gunzip::new(&gz[..]).limit(plain.len() as u64);
        let mut buf = vec![0u8; 1024];
        loop {
            let n = g.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            assert!(g.marks.len() <= GUNZIP_MARKS);
        }
        assert_eq!(all.len(), plain.len(), "exactly the limit is allowed");
        let mut g = Gunzip::new(&gz[..]).limit(plain.len() as u64 - 1);
        let e = io::copy(&mut g, &mut io::sink()).unwrap_err();
        let past = e.get_ref().unwrap().downcast_ref::<ExpansionLimit>();
        assert_eq!(past.unwrap().limit, plain.len() as u64 - 1);
        // Resuming past the limit fails the same way.
        let mut g = Gunzip::new(&gz[..]).limit(1000);
        let e = g.skip_to(5000).unwrap_err();
        assert!(e.get_ref().unwrap().is::<ExpansionLimit>());
    }

    #[test]
    fn gunzip_skips_and_reports_compressed_positions() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let plain: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("user{i}@x.io,a,b,c,d\n").into_bytes())
            .collect();
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&plain).unwrap();
        let gz = enc.finish().unwrap();
        let mut g = Gunzip::new(&gz[..]);
        let mut out = vec![];
        g.read_to_end(&mut out).unwrap();
        assert_eq!(out, plain);
        assert!(g.is_end(plain.len() as u64));
        assert!(g.compressed_at(plain.len() as u64) <= gz.len() as u64);
        let mut g = Gunzip::new(&gz[..]);
        g.skip_to(100_000).unwrap();
        let mut rest = vec![];
        g.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, plain[100_000..]);
    }
}
