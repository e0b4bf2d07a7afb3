//! Streaming CSV record reader over `csv-core` that knows, for every record, its physical
//! line (1-based, counting every LF in the file, including those inside quoted fields) and
//! the byte offset and line at which the next record starts — the checkpoint. Blank lines
//! are skipped; a UTF-8 BOM at offset 0 is stripped; records are capped in size so that an
//! unclosed quote cannot make the reader hold the rest of the file.

use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder};
use std::io::{self, Read};

/// Largest record kept; larger ones are reported as `record_too_large` and skipped.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
const MAX_FIELDS: usize = 64;
const CHUNK: usize = 256 * 1024;

/// One CSV record as read: raw field bytes, not yet decoded or validated.
#[derive(Debug, Default, Clone)]
pub struct RawRecord {
    /// Physical line where the record starts.
    pub line: u64,
    /// Concatenated field bytes; `ends[i]` is the end of field i.
    data: Vec<u8>,
    ends: Vec<usize>,
    /// The record exceeded [`MAX_RECORD_BYTES`] or had more than 64 fields; its data was
    /// dropped (the field count is still exact).
    pub oversize: bool,
    field_count: usize,
}

impl RawRecord {
    pub fn len(&self) -> usize {
        self.field_count
    }

    pub fn is_empty(&self) -> bool {
        self.field_count == 0
    }

    /// Field `i`, when kept (always, unless the record is oversize).
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        self.field_range(i).map(|r| &self.data[r])
    }

    /// Where field `i` is in [`RawRecord::data`], when kept.
    pub fn field_range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        if self.oversize || i >= self.ends.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(start..self.ends[i])
    }

    /// Every kept field's bytes, one after the other.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

pub struct RecordReader<R> {
    src: R,
    core: CoreReader,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Absolute byte offset of `buf[pos]` in the object.
    offset: u64,
    /// Physical line of `buf[pos]`.
    line: u64,
    /// Previous consumed byte, to treat CR LF as one line break.
    last_byte: u8,
    /// Still at offset 0, where a byte-order mark may sit.
    at_start: bool,
    /// `csv-core` has been given input. It strips a BOM from the start of its first input,
    /// which would make a reader resumed at a record starting with one read that record
    /// differently; BOMs are this reader's business (offset 0 only), so the first input the
    /// core sees is one byte, too short to be taken for a BOM.
    core_started: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: Read> RecordReader<R> {
    /// A reader positioned at `offset` / `line` of the object; `src` yields the bytes from
    /// `offset` on. Offset 0 is the start of the file: a BOM there is skipped.
    pub fn new(src: R, offset: u64, line: u64) -> Self {
        Self::with_dialect(src, offset, line, offset == 0, b',')
    }

    /// A reader with another delimiter; `strip_bom`: whether a UTF-8 BOM at the first byte is
    /// skipped (the start of a UTF-8 file; other encodings' BOMs are the decoder's business).
    pub fn with_dialect(src: R, offset: u64, line: u64, strip_bom: bool, delimiter: u8) -> Self {
        RecordReader {
            src,
            core: ReaderBuilder::new().delimiter(delimiter).build(),
            buf: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            offset,
            line,
            last_byte: b'\n',
            at_start: strip_bom,
            core_started: false,
            out: vec![0; 4096],
            ends: vec![0; MAX_FIELDS],
        }
    }

    /// The source, to map positions through its layers.
    pub fn source_mut(&mut self) -> &mut R {
        &mut self.src
    }

    /// Offset and line where the next record (or blank line) starts: a safe checkpoint
    /// after a record has been returned.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.line)
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos < self.len || self.eof {
            return Ok(());
        }
        self.pos = 0;
        self.len = 0;
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let bytes = &self.buf[self.pos..self.pos + n];
        self.line += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(&b) = bytes.last() {
            self.last_byte = b;
        }
        self.pos += n;
        self.offset += n as u64;
    }

    /// Skips a BOM at the very start, then blank lines (and the LF of a CR LF pair).
    fn skip_separators(&mut self) -> io::Result<()> {
        if self.at_start {
            self.at_start = false;
            self.fill()?;
            if self.buf[self.pos..self.len].starts_with(b"\xEF\xBB\xBF") {
                self.consume(3);
            }
        }
        loop {
            self.fill()?;
            if self.pos >= self.len {
                return Ok(());
            }
            match self.buf[self.pos] {
                b'\n' | b'\r' => self.consume(1),
                _ => return Ok(()),
            }
        }
    }

    /// Reads the next record into `rec`; `false` at the end of the input.
    pub fn read(&mut self, rec: &mut RawRecord) -> io::Result<bool> {
        self.skip_separators()?;
        if self.pos >= self.len && self.eof {
            return Ok(false);
        }
        rec.line = self.line;
        rec.oversize = false;
        rec.field_count = 0;
        let mut outlen = 0;
        let mut endlen = 0;
        loop {
            self.fill()?;
            let mut input = &self.buf[self.pos..self.len];
            if !self.core_started && !input.is_empty() {
                input = &input[..1];
                self.core_started = true;
            }
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..]);
            self.consume(nin);
            outlen += nout;
            endlen += nend;
            rec.field_count += nend;
            match res {
                ReadRecordResult::InputEmpty => continue,
                ReadRecordResult::OutputFull => {
                    if self.out.len() >= MAX_RECORD_BYTES {
                        // Keep parsing to find the record's end, but drop its bytes.
                        rec.oversize = true;
                        outlen = 0;
                    } else {
                        let n = self.out.len() * 2;
                        self.out.resize(n, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    rec.oversize = true;
                    endlen = 0;
                }
                ReadRecordResult::Record => {
                    // The last field's end is reported with the record.
                    if self.last_byte == b'\r' {
                        self.skip_lf_after_cr()?;
                    }
                    if !rec.oversize {
                        rec.data.clear();
                        rec.data.extend_from_slice(&self.out[..outlen]);
                        rec.ends.clear();
                        rec.ends.extend_from_slice(&self.ends[..endlen]);
                    }
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }

    fn skip_lf_after_cr(&mut self) -> io::Result<()> {
        self.fill()?;
        if self.pos < self.len && self.buf[self.pos] == b'\n' {
            self.consume(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<(u64, Vec<String>, (u64, u64))> {
        read_from(input, 0, 1)
    }

    fn read_from(input: &[u8], offset: u64, line: u64) -> Vec<(u64, Vec<String>, (u64, u64))> {
        let mut r = RecordReader::new(&input[offset as usize..], offset, line);
        let mut rec = RawRecord::default();
        let mut out = vec![];
        while r.read(&mut rec).unwrap() {
            let fields = (0..rec.len())
                .map(|i| String::from_utf8_lossy(rec.field(i).unwrap()).into_owned())
                .collect();
            out.push((rec.line, fields, r.position()));
        }
        out
    }

    #[test]
    fn lines_are_physical_with_quotes_blank_lines_and_crlf() {
        let input =
            b"email,a\r\nx@y.z,\"multi\r\nline\"\r\n\r\n\nq@w.e,\"say \"\"hi\"\", ok\"\r\nlast,1";
        let got = all(input);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1, vec!["x@y.z", "multi\r\nline"]);
        assert_eq!(got[2].0, 6);
        assert_eq!(got[2].1, vec!["q@w.e", "say \"hi\", ok"]);
        assert_eq!(got[3].0, 7);
        assert_eq!(got[3].2, (input.len() as u64, 7));
    }

    #[test]
    fn bom_is_stripped_only_at_the_start() {
        let got = all(b"\xEF\xBB\xBFemail\nb\n");
        assert_eq!(got[0].1, vec!["email"]);
        assert_eq!(got[0].2, (9, 2));
    }

    #[test]
    fn resuming_from_a_position_gives_the_same_records() {
        let input = b"h\n1,\"a\nb\"\n\n2\n3\n";
        let full = all(input);
        for (i, (_, _, (offset, line))) in full.iter().enumerate() {
            let rest = read_from(input, *offset, *line);
            assert_eq!(rest, full[i + 1..].to_vec());
        }
    }

    #[test]
    fn a_record_starting_with_a_bom_reads_the_same_when_resumed() {
        // Found by proptest (fuzz/regressions/read_validate/bom-after-checkpoint): csv-core
        // stripped the BOM of the first record it saw, so a resumed reader lost it.
        let input = b"\x0e\r\xEF\xBB\xBF";
        let full = all(input);
        assert_eq!(full.len(), 2);
        assert_eq!(full[1].1, vec!["\u{feff}"]);
        assert_eq!(
            read_from(input, full[0].2 .0, full[0].2 .1),
            full[1..].to_vec()
        );
        let input = b"h\n\xEF\xBB\xBFa@b.co,x\n";
        let full = all(input);
        assert_eq!(full[1].1, vec!["\u{feff}a@b.co", "x"]);
        assert_eq!(read_from(input, 2, 2), full[1..].to_vec());
    }

    #[test]
    fn unclosed_quote_is_capped() {
        let mut input = b"h\n\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES * 3));
        let mut r = RecordReader::new(&input[..], 0, 1);
        let mut rec = RawRecord::default();
        assert!(r.read(&mut rec).unwrap());
        assert!(r.read(&mut rec).unwrap());
        assert!(rec.oversize);
        assert_eq!(rec.line, 2);
        assert!(!r.read(&mut rec).unwrap());
    }
}
