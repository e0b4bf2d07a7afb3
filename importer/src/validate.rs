//! Row validation: turns a raw record into a customer row or one error with a stable code.
//! Checks run in a fixed order and the first failure is reported.

use crate::reader::{RawRecord, MAX_RECORD_BYTES};
use bulk_import_core::email::{Email, EmailError};

pub const COLUMNS: [&str; 5] = ["email", "first_name", "last_name", "phone", "city"];
/// Longest optional field, in characters.
pub const MAX_FIELD_CHARS: usize = 255;
/// Longest value of a rejected row kept for the report, in bytes (UTF-8, cut at a character
/// boundary). A longer value is cut there and followed by [`cut_marker`], so that a file of
/// huge bad fields costs the importer a bounded amount of memory (a batch holds up to
/// `BATCH_SIZE` rejected rows) while the report still shows the line, the code and the start
/// of each value.
pub const MAX_REPORTED_FIELD_BYTES: usize = 1024;

/// What follows a reported value that was cut: `…[cut: N bytes in all]`.
pub fn cut_marker(total_bytes: usize) -> String {
    format!("\u{2026}[cut: {total_bytes} bytes in all]")
}

/// Stable, machine-readable error codes (they appear in `errors.csv` and the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    WrongColumnCount,
    RecordTooLarge,
    InvalidUtf8,
    InvalidCharacter,
    MissingEmail,
    FieldTooLong,
    InvalidEmail,
    DuplicateInFile,
    DuplicateInDb,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::WrongColumnCount => "wrong_column_count",
            ErrorCode::RecordTooLarge => "record_too_large",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::InvalidCharacter => "invalid_character",
            ErrorCode::MissingEmail => "missing_email",
            ErrorCode::FieldTooLong => "field_too_long",
            ErrorCode::InvalidEmail => "invalid_email",
            ErrorCode::DuplicateInFile => "duplicate_in_file",
            ErrorCode::DuplicateInDb => "duplicate_in_db",
        }
    }
}

/// A valid row, ready to load: its line and its values in one allocation (a million rows
/// are a million of these, so one string each rather than six). Optional fields are kept
/// verbatim; empty ones are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub line: i64,
    /// The email (trimmed and lower-cased), the four optional fields, then the email cell
    /// as read when it differs from the email; `ends[i]` is where value i ends (a record is
    /// at most `MAX_RECORD_BYTES`, so a `u32` holds it).
    text: String,
    ends: [u32; 6],
}

impl Customer {
    /// A row from its values: `fields` are first_name, last_name, phone, city.
    pub fn new(line: i64, email: String, raw_email: Option<&str>, fields: [&str; 4]) -> Customer {
        let mut text = email;
        let extra: usize =
            fields.iter().map(|f| f.len()).sum::<usize>() + raw_email.map_or(0, str::len);
        text.reserve_exact(extra);
        let mut ends = [0u32; 6];
        ends[0] = text.len() as u32;
        for (i, f) in fields.iter().enumerate() {
            text.push_str(f);
            ends[i + 1] = text.len() as u32;
        }
        if let Some(raw) = raw_email {
            text.push_str(raw);
        }
        ends[5] = text.len() as u32;
        Customer { line, text, ends }
    }

    fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Trimmed and lower-cased.
    pub fn email(&self) -> &str {
        self.value(0)
    }

    /// Optional field `i` of first_name, last_name, phone, city (0–3); `None` when empty.
    pub fn field(&self, i: usize) -> Option<&str> {
        Some(self.value(i + 1)).filter(|v| !v.is_empty())
    }

    /// The email cell as read, when it differs from `email` (for the error report).
    pub fn raw_email(&self) -> Option<&str> {
        Some(self.value(5)).filter(|v| !v.is_empty())
    }

    pub fn raw_fields(&self) -> [Option<String>; 5] {
        std::array::from_fn(|i| match i {
            0 => Some(self.raw_email().unwrap_or(self.email()).to_string()),
            i => self.field(i - 1).map(str::to_string),
        })
    }
}

/// A rejected row: its line, code, message and the original field values as read (lossily
/// decoded when not UTF-8; NUL replaced, as Postgres text cannot hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: i64,
    pub code: ErrorCode,
    pub message: String,
    pub fields: [Option<String>; 5],
}

impl RowError {
    /// A row whose email the job loaded already, from line `first`.
    pub fn duplicate_in_file(c: &Customer, first: i64) -> RowError {
        RowError {
            line: c.line,
            code: ErrorCode::DuplicateInFile,
            message: format!("email {} already appears on line {first}", c.email()),
            fields: c.raw_fields(),
        }
    }

    /// A row whose email was in the organization's customers before the job.
    pub fn duplicate_in_db(c: &Customer) -> RowError {
        RowError {
            line: c.line,
            code: ErrorCode::DuplicateInDb,
            message: format!("email {} already exists", c.email()),
            fields: c.raw_fields(),
        }
    }
}

pub enum Row {
    Valid(Customer),
    Invalid(RowError),
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")
}

/// A field of a rejected row as the report keeps it: lossily decoded, NUL replaced, and cut
/// to [`MAX_REPORTED_FIELD_BYTES`] (at a character boundary) with a visible marker.
pub fn reported_field(bytes: &[u8]) -> String {
    let mut head = &bytes[..bytes.len().min(MAX_REPORTED_FIELD_BYTES)];
    if head.len() < bytes.len() {
        // Do not split a UTF-8 sequence: an incomplete one at the cut is dropped.
        if let Err(e) = std::str::from_utf8(head) {
            if e.error_len().is_none() {
                head = &head[..e.valid_up_to()];
            }
        }
    }
    let mut out = lossy(head);
    let mut cut = head.len() < bytes.len();
    if out.len() > MAX_REPORTED_FIELD_BYTES {
        // Replacement characters (3 bytes each) made it longer than the cap.
        let mut end = MAX_REPORTED_FIELD_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        cut = true;
    }
    if cut {
        out.push_str(&cut_marker(bytes.len()));
    }
    out
}

/// Where the five columns are in a record (from the header, `crate::dialect`), and how
/// many fields a record must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub index: [Option<usize>; 5],
    pub fields: usize,
}

impl Columns {
    /// The predecessor's layout: the five columns in order, exactly five fields.
    pub const POSITIONAL: Columns = Columns {
        index: [Some(0), Some(1), Some(2), Some(3), Some(4)],
        fields: 5,
    };

    fn field<'r>(&self, rec: &'r RawRecord, column: usize) -> Option<&'r [u8]> {
        self.index[column].and_then(|i| rec.field(i))
    }

    fn field_range(&self, rec: &RawRecord, column: usize) -> Option<std::ops::Range<usize>> {
        self.index[column].and_then(|i| rec.field_range(i))
    }
}

fn raw_fields(rec: &RawRecord, cols: &Columns) -> [Option<String>; 5] {
    std::array::from_fn(|i| cols.field(rec, i).map(reported_field))
}

/// Validates a record of the standard five-column layout.
pub fn validate(rec: &RawRecord) -> Row {
    validate_with(rec, &Columns::POSITIONAL)
}

/// Validates a record whose columns are where `cols` says; a missing optional column is
/// NULL, unmapped fields are ignored. One piece on purpose: the order of the checks is the
/// precedence of the error codes (docs/import-semantics.md), and the hot path of every row
/// shares the fields decoded once.
pub fn validate_with(rec: &RawRecord, cols: &Columns) -> Row {
    let line = rec.line as i64;
    let fail = |code: ErrorCode, message: String| {
        Row::Invalid(RowError {
            line,
            code,
            message,
            fields: raw_fields(rec, cols),
        })
    };
    if rec.oversize {
        return fail(
            ErrorCode::RecordTooLarge,
            format!(
                "record is larger than {} bytes or has more than 64 fields (unclosed quote?)",
                MAX_RECORD_BYTES
            ),
        );
    }
    if rec.len() != cols.fields {
        return fail(
            ErrorCode::WrongColumnCount,
            format!("expected {} fields, found {}", cols.fields, rec.len()),
        );
    }
    // The whole record is checked at once (the usual case: every byte is UTF-8, no NUL); a
    // field of it is then UTF-8 when it starts and ends at character boundaries. Otherwise
    // each mapped field is checked on its own, so that the first bad column is named.
    let whole = std::str::from_utf8(rec.data()).ok();
    let mut values: [&str; 5] = [""; 5];
    for (i, name) in COLUMNS.iter().enumerate() {
        let range = cols.field_range(rec, i).unwrap_or_default();
        match whole.and_then(|w| w.get(range.clone())) {
            Some(s) => values[i] = s,
            None => match std::str::from_utf8(&rec.data()[range]) {
                Ok(s) => values[i] = s,
                Err(_) => {
                    return fail(ErrorCode::InvalidUtf8, format!("{name} is not valid UTF-8"))
                }
            },
        }
    }
    if rec.data().contains(&0) {
        for (i, name) in COLUMNS.iter().enumerate() {
            if values[i].contains('\0') {
                return fail(
                    ErrorCode::InvalidCharacter,
                    format!("{name} contains a NUL character"),
                );
            }
        }
    }
    if values[0].trim().is_empty() {
        return fail(ErrorCode::MissingEmail, "email is required".into());
    }
    for (i, name) in COLUMNS.iter().enumerate().skip(1) {
        // At most one character per byte: only a long value needs counting.
        if values[i].len() > MAX_FIELD_CHARS && values[i].chars().count() > MAX_FIELD_CHARS {
            return fail(
                ErrorCode::FieldTooLong,
                format!("{name} is longer than {MAX_FIELD_CHARS} characters"),
            );
        }
    }
    let email = match Email::parse(values[0]) {
        Ok(e) => e,
        Err(EmailError::Empty) => return fail(ErrorCode::MissingEmail, "email is required".into()),
        Err(EmailError::TooLong) => {
            return fail(
                ErrorCode::FieldTooLong,
                "email is longer than 254 characters".into(),
            )
        }
        Err(EmailError::Invalid) => {
            return fail(
                ErrorCode::InvalidEmail,
                format!("{:?} is not a valid email address", values[0].trim()),
            )
        }
    };
    let email = email.into_string();
    let raw_email = (email != values[0]).then_some(values[0]);
    Row::Valid(Customer::new(
        line,
        email,
        raw_email,
        [values[1], values[2], values[3], values[4]],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::RecordReader;

    fn check(line: &[u8]) -> Row {
        let mut r = RecordReader::new(line, 0, 1);
        let mut rec = RawRecord::default();
        assert!(r.read(&mut rec).unwrap());
        validate(&rec)
    }

    fn code(line: &[u8]) -> &'static str {
        match check(line) {
            Row::Invalid(e) => e.code.as_str(),
            Row::Valid(_) => "valid",
        }
    }

    #[test]
    fn codes_in_order_of_precedence() {
        assert_eq!(code(b"a@b.co,x,y,z"), "wrong_column_count");
        assert_eq!(code(b"a@b.co,x,y,z,w,v"), "wrong_column_count");
        assert_eq!(code(b"a@b.co,\xff,y,z,w"), "invalid_utf8");
        assert_eq!(code(b"a@b.co,x\0,y,z,w"), "invalid_character");
        assert_eq!(code(b" ,x,y,z,w"), "missing_email");
        assert_eq!(code(b"not-an-email,x,y,z,w"), "invalid_email");
        let long = format!("a@b.co,{},y,z,w", "x".repeat(256));
        assert_eq!(code(long.as_bytes()), "field_too_long");
        let ok = format!("a@b.co,{},y,z,w", "\u{e9}".repeat(255));
        assert_eq!(code(ok.as_bytes()), "valid");
    }

    #[test]
    fn email_is_folded_and_empty_fields_are_null() {
        let Row::Valid(c) = check(b"  Ann@Example.COM ,Ann,,, ") else {
            panic!()
        };
        assert_eq!(c.email(), "ann@example.com");
        assert_eq!(c.field(0), Some("Ann"));
        assert_eq!(c.field(1), None);
        assert_eq!(c.field(3), Some(" "));
        assert_eq!(c.raw_email(), Some("  Ann@Example.COM "));
        assert_eq!(c.raw_fields()[0].as_deref(), Some("  Ann@Example.COM "));
    }

    #[test]
    fn invalid_utf8_keeps_lossy_values() {
        let Row::Invalid(e) = check(b"a@b.co,J\xf6rg,y,z,w") else {
            panic!()
        };
        assert_eq!(e.fields[1].as_deref(), Some("J\u{FFFD}rg"));
        assert_eq!(e.fields[0].as_deref(), Some("a@b.co"));
    }

    #[test]
    fn huge_values_of_rejected_rows_are_cut_with_a_marker() {
        let big = "\u{e9}".repeat(500_000); // 1,000,000 bytes, under the record limit
        let Row::Invalid(e) = check(format!("a@b.co,{big},y,z,w").as_bytes()) else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::FieldTooLong);
        let kept = e.fields[1].as_deref().unwrap();
        let marker = cut_marker(1_000_000);
        assert!(kept.ends_with(&marker));
        let head = &kept[..kept.len() - marker.len()];
        assert_eq!(head, "\u{e9}".repeat(MAX_REPORTED_FIELD_BYTES / 2));
        assert_eq!(e.fields[2].as_deref(), Some("y"));
        // Exactly at the cap: kept whole.
        let at_cap = "x".repeat(MAX_REPORTED_FIELD_BYTES);
        assert_eq!(reported_field(at_cap.as_bytes()), at_cap);
        // A multi-byte character across the cap is dropped whole, never split.
        let odd = format!("x{}", "\u{e9}".repeat(MAX_REPORTED_FIELD_BYTES));
        let cut = reported_field(odd.as_bytes());
        assert!(!cut.contains('\u{FFFD}'));
        assert!(cut.starts_with(&format!("x{}", "\u{e9}".repeat(511))));
        assert!(cut.ends_with(&cut_marker(odd.len())));
        // Invalid bytes grow when replaced: the result is still capped.
        let junk = vec![0xffu8; MAX_REPORTED_FIELD_BYTES];
        let out = reported_field(&junk);
        assert!(out.len() <= MAX_REPORTED_FIELD_BYTES + cut_marker(junk.len()).len());
    }
}
