//! The invariants the fuzz targets check. Shared by `fuzz_targets/*` (libFuzzer) and by
//! `importer/tests/it/properties.rs`, which replays the committed corpus (`fuzz/corpus/`) and
//! proptest-generated inputs through the same functions in the ordinary test suite.
//!
//! Every function panics (an `assert!`) on a broken invariant, which is what a fuzzer reports.

use bulk_import_core::email::Email;
use bulk_import_importer::{
    reader::{RawRecord, RecordReader},
    report::{neutralize, ReportWriter, HEADER},
    validate::{
        cut_marker, reported_field, validate, ErrorCode, Row, COLUMNS, MAX_FIELD_CHARS,
        MAX_REPORTED_FIELD_BYTES,
    },
};

/// One record as read: its line, its fields (`None` when oversize) and the checkpoint after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub line: u64,
    pub fields: Option<Vec<Vec<u8>>>,
    pub count: usize,
    pub next: (u64, u64),
}

/// Every record of `input` from `offset`/`line` on, as the importer's reader sees them.
pub fn read_all(input: &[u8], offset: u64, line: u64) -> Vec<(Read, Row)> {
    let mut reader = RecordReader::new(&input[offset as usize..], offset, line);
    let mut rec = RawRecord::default();
    let mut out = vec![];
    while reader
        .read(&mut rec)
        .expect("reading from memory cannot fail")
    {
        let fields = (!rec.oversize).then(|| {
            (0..rec.len())
                .map(|i| rec.field(i).expect("kept").to_vec())
                .collect()
        });
        let read = Read {
            line: rec.line,
            fields,
            count: rec.len(),
            next: reader.position(),
        };
        let row = validate(&rec);
        check_row(&rec, &row);
        out.push((read, row));
    }
    out
}

/// CSV reading and row validation on arbitrary bytes: no panic; lines and checkpoints move
/// forward and stay inside the input; a line count never exceeds the LFs seen; and resuming
/// from any checkpoint (what a restarted importer does) yields exactly the records that
/// follow it in the uninterrupted read.
pub fn read_and_validate(input: &[u8]) {
    let all = read_all(input, 0, 1);
    let newlines = input.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut prev: (u64, u64) = (0, 1);
    for (read, _) in &all {
        assert!(read.line >= prev.1, "a record starts before the checkpoint");
        assert!(read.next.0 > prev.0, "the checkpoint did not move forward");
        assert!(read.next.0 <= input.len() as u64, "checkpoint past the end");
        assert!(read.next.1 >= read.line, "the next line is before this one");
        assert!(read.next.1 <= newlines + 1, "more lines than LFs");
        prev = read.next;
    }
    // Resuming from every checkpoint is quadratic: bound it so big inputs stay fast.
    let reads: Vec<&Read> = all.iter().map(|(r, _)| r).collect();
    for (i, read) in reads.iter().enumerate().take(32) {
        let rest: Vec<Read> = read_all(input, read.next.0, read.next.1)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let want: Vec<Read> = reads[i + 1..].iter().map(|r| (*r).clone()).collect();
        assert_eq!(
            rest, want,
            "resuming at {:?} changed what follows",
            read.next
        );
    }
}

/// What validation promises about one record.
pub fn check_row(rec: &RawRecord, row: &Row) {
    match row {
        Row::Valid(c) => {
            assert!(!rec.oversize && rec.len() == COLUMNS.len());
            let raw: Vec<&str> = (0..5)
                .map(|i| std::str::from_utf8(rec.field(i).unwrap()).expect("valid rows are UTF-8"))
                .collect();
            assert_eq!(c.line, rec.line as i64);
            let email = Email::parse(raw[0]).expect("a valid row has a valid email");
            assert_eq!(c.email(), email.as_str());
            assert_eq!(
                Email::parse(c.email())
                    .expect("a stored email parses again")
                    .as_str(),
                c.email(),
                "email normalisation is idempotent"
            );
            assert_eq!(c.email(), c.email().trim().to_lowercase());
            assert_eq!(
                c.raw_fields()[0].as_deref(),
                Some(raw[0]),
                "the report shows the email cell as read"
            );
            for (i, raw) in raw[1..].iter().enumerate() {
                // Stored verbatim, no trimming; empty becomes NULL.
                assert_eq!(c.field(i), (!raw.is_empty()).then_some(*raw));
                assert!(raw.chars().count() <= MAX_FIELD_CHARS);
                assert!(!raw.contains('\0'));
            }
        }
        Row::Invalid(e) => {
            assert_eq!(e.line, rec.line as i64);
            let want: [Option<String>; 5] =
                std::array::from_fn(|i| rec.field(i).map(reported_field));
            assert_eq!(e.fields, want, "the report keeps the values as read");
            assert!(!e.message.is_empty());
            if rec.oversize {
                assert_eq!(e.code, ErrorCode::RecordTooLarge);
            } else if rec.len() != COLUMNS.len() {
                assert_eq!(e.code, ErrorCode::WrongColumnCount);
            }
            for f in e.fields.iter().flatten() {
                assert!(!f.contains('\0'), "NUL never reaches Postgres");
                assert!(
                    f.len() <= MAX_REPORTED_FIELD_BYTES + cut_marker(usize::MAX).len(),
                    "reported values are capped"
                );
            }
        }
    }
}

/// One row of `errors.csv` before writing.
pub type ReportRow = (u32, String, String, [Option<String>; 5]);

/// The `errors.csv` writer: what it writes parses back (with a standard CSV reader) to the
/// header and then, cell for cell, the values written — each neutralised, and so never a
/// formula — however the rows are split between [`ReportWriter::take`] calls.
pub fn report_roundtrip(rows: &[ReportRow], take_after: usize) {
    let mut w = ReportWriter::default();
    let mut bytes = vec![];
    for (i, (line, code, message, fields)) in rows.iter().enumerate() {
        w.write(i64::from(*line), code, message, fields);
        if i == take_after {
            bytes.extend(w.take());
        }
    }
    bytes.extend(w.take());
    let parsed: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&bytes[..])
        .records()
        .map(|r| {
            r.expect("errors.csv parses")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect();
    assert_eq!(
        parsed.len(),
        rows.len() + 1,
        "one record per row plus the header"
    );
    assert_eq!(parsed[0], HEADER);
    for ((line, code, message, fields), got) in rows.iter().zip(&parsed[1..]) {
        let mut want = vec![
            line.to_string(),
            neutralize(code).into_owned(),
            neutralize(message).into_owned(),
        ];
        want.extend(
            fields
                .iter()
                .map(|f| neutralize(f.as_deref().unwrap_or("")).into_owned()),
        );
        assert_eq!(got, &want);
        for cell in got {
            assert!(
                !matches!(
                    cell.as_bytes().first(),
                    Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
                ),
                "a formula cell got through: {cell:?}"
            );
        }
        // Neutralising only ever inserts apostrophes.
        for (value, cell) in fields.iter().zip(&got[3..]) {
            let value = value.as_deref().unwrap_or("");
            assert_eq!(cell.replace('\'', ""), value.replace('\'', ""));
        }
    }
    // Nor does a spreadsheet that splits cells at `;` (or `,`, tab, a line break) whatever
    // it makes of the quotes: no piece of the file between two of those starts a formula.
    let text = String::from_utf8(bytes).expect("errors.csv is UTF-8");
    for piece in text.split([',', ';', '\t', '\r', '\n']) {
        let piece = piece.trim_start_matches([' ', '"']);
        assert!(
            !matches!(piece.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@')),
            "a formula starts after a separator: {piece:?}"
        );
    }
}

/// Dialect detection on arbitrary bytes (taken as the start of a file, and as all of it):
/// no panic; a delimiter of the four; a header either positional (the five columns in order)
/// or by name with an email column, each mapped column at a distinct position within the
/// header and named by one of its spellings; `missing_email_column` only when some name was
/// recognised and none is the email. Then the input is read with the detected dialect
/// through the importer's decoder, and resuming from any checkpoint (an offset in the input)
/// yields exactly the records that follow it.
pub fn detect_and_read(input: &[u8]) {
    use bulk_import_core::options::{HeaderKind, ImportOptions, DELIMITERS};
    use bulk_import_importer::dialect::{self, detect, recognise};
    use bulk_import_importer::mapping::HeaderError;
    for whole in [true, false] {
        let d = match detect(input, whole, false, &ImportOptions::default()) {
            Ok(d) => d,
            Err(HeaderError::MissingEmailColumn(found)) => {
                assert!(
                    !found.is_empty(),
                    "missing_email_column names what it found"
                );
                continue;
            }
            Err(e @ HeaderError::HeaderNotFound { .. }) => unreachable!("no columns= given: {e:?}"),
        };
        assert!(DELIMITERS.contains(&d.delimiter_byte()));
        assert!(encoding_rs::Encoding::for_label(d.encoding.as_bytes()).is_some());
        match d.header {
            HeaderKind::Positional => {
                assert_eq!(d.fields, COLUMNS.len());
                let pos: Vec<usize> = d.columns.iter().map(|c| c.position).collect();
                assert_eq!(pos, [1, 2, 3, 4, 5]);
            }
            HeaderKind::Explicit => unreachable!("no columns= given"),
            HeaderKind::ByName => {
                assert_eq!(d.columns.first().map(|c| c.column.as_str()), Some("email"));
                let mut seen = std::collections::HashSet::new();
                for c in &d.columns {
                    assert!(c.position >= 1 && c.position <= d.fields);
                    assert!(seen.insert(c.position), "two columns at one position");
                    let index = COLUMNS.iter().position(|&n| n == c.column).unwrap();
                    assert_eq!(recognise(&c.header), Some(index), "{:?}", c.header);
                }
                assert!(d.warnings.len() + d.columns.len() >= d.fields.min(1));
            }
        }
        if whole {
            let (encoding, _) = dialect::encoding_of(&d, input);
            let all = read_decoded(input, 0, 1, encoding, d.delimiter_byte());
            for (i, (_, _, next)) in all.iter().enumerate().take(16) {
                let rest = read_decoded(input, next.0, next.1, encoding, d.delimiter_byte());
                assert_eq!(
                    rest,
                    all[i + 1..].to_vec(),
                    "resuming at {next:?} changed what follows"
                );
            }
        }
    }
}

/// A record's line, its fields, and the checkpoint after it as (input offset, line).
type DecodedRecord = (u64, Vec<Vec<u8>>, (u64, u64));

/// (line, fields, checkpoint as (input offset, line)) of every record of `input` from
/// `offset`, read as the importer reads a file in `encoding`.
fn read_decoded(
    input: &[u8],
    offset: u64,
    line: u64,
    encoding: &'static encoding_rs::Encoding,
    delimiter: u8,
) -> Vec<DecodedRecord> {
    use bulk_import_importer::decode::Transcode;
    let src = &input[offset as usize..];
    let mut out = vec![];
    let mut rec = RawRecord::default();
    let mut push = |rec: &RawRecord, next: (u64, u64)| {
        let fields = (0..rec.len())
            .map(|i| rec.field(i).map(<[u8]>::to_vec).unwrap_or_default())
            .collect();
        out.push((rec.line, fields, next));
    };
    if encoding == encoding_rs::UTF_8 {
        let mut r = RecordReader::with_dialect(src, offset, line, offset == 0, delimiter);
        while r.read(&mut rec).expect("reading from memory") {
            push(&rec, r.position());
        }
    } else {
        let t = Transcode::new(src, offset, encoding, offset == 0).expect("reading from memory");
        let mut r = RecordReader::with_dialect(t, 0, line, false, delimiter);
        while r.read(&mut rec).expect("reading from memory") {
            let (pos, next_line) = r.position();
            let at = r
                .source_mut()
                .map(pos)
                .expect("a checkpoint is at a line boundary");
            assert!(at <= input.len() as u64);
            push(&rec, (at, next_line));
        }
    }
    out
}
