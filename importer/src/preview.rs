//! A preview of how a file would be imported, from its first bytes only (`POST
//! /imports/preview`, docs/api.md): the dialect the importer would detect, the column each
//! header cell maps to, and the first rows as the importer would read and validate them. It
//! uses the importer's own detection (`crate::dialect`), mapping (`crate::mapping`), reader
//! and validation (`crate::validate`), so a preview and an import never disagree. Pure: no
//! database, no storage.

use crate::{
    dialect::{self, SAMPLE_BYTES},
    mapping::HeaderError,
    reader::{RawRecord, RecordReader},
    source::columns_of,
    validate::{validate_with, Row, COLUMNS},
};
use bulk_import_core::options::{Dialect, ImportOptions};
use std::io::Read;

/// Data rows a preview shows, at most.
pub const PREVIEW_ROWS: usize = 20;

/// One header cell and the column it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedCell {
    pub header: String,
    /// 0-based place of the cell in the header.
    pub position: usize,
    /// `email`, `first_name`, `last_name`, `phone` or `city`; `None`: not imported.
    pub column: Option<&'static str>,
}

/// One data row as the importer would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRow {
    /// Physical line of the file (the header is line 1).
    pub line: u64,
    /// A valid row: the values the import would store (email trimmed and lower-cased, empty
    /// ones `None`); a bad row: the values as the bad-rows report shows them.
    pub values: [Option<String>; 5],
    /// The first check the row fails, as the bad-rows report names it: code and message.
    pub error: Option<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub dialect: Dialect,
    pub mapping: Vec<MappedCell>,
    pub rows: Vec<PreviewRow>,
    /// The file goes on after the rows shown.
    pub truncated: bool,
}

/// The sample the dialect is detected from: the first [`SAMPLE_BYTES`] of the file,
/// decompressed when it is gzip. `head` is the start of the stored file (`whole`: all of
/// it). Returns (sample, whether it is the whole file, whether the file is gzip).
pub fn sample_of(head: &[u8], whole: bool) -> (Vec<u8>, bool, bool) {
    if !dialect::is_gzip(head) {
        let sample = &head[..head.len().min(SAMPLE_BYTES)];
        return (sample.to_vec(), whole && head.len() < SAMPLE_BYTES, false);
    }
    // A head cut in the middle of the compressed stream decompresses as far as it goes.
    let mut out = Vec::with_capacity(SAMPLE_BYTES);
    let limit = SAMPLE_BYTES as u64;
    let complete = flate2::read::MultiGzDecoder::new(head)
        .take(limit)
        .read_to_end(&mut out)
        .is_ok();
    let whole = whole && complete && out.len() < SAMPLE_BYTES;
    (out, whole, true)
}

/// Checks that the file's header suits the options (an explicit mapping names headers the
/// file has; a recognised header has an email column): what `POST /imports` checks before
/// it accepts a file with `columns=`.
pub fn check_header(head: &[u8], whole: bool, options: &ImportOptions) -> Result<(), HeaderError> {
    let (sample, whole, gzip) = sample_of(head, whole);
    dialect::detect(&sample, whole, gzip, options).map(|_| ())
}

/// Previews the file whose first bytes are `head` (`whole`: all of it).
pub fn preview(head: &[u8], whole: bool, options: &ImportOptions) -> Result<Preview, HeaderError> {
    let (sample, whole, gzip) = sample_of(head, whole);
    let (dialect, cells) = dialect::detect_with_header(&sample, whole, gzip, options)?;
    let mapping = cells
        .iter()
        .enumerate()
        .map(|(i, header)| MappedCell {
            header: header.clone(),
            position: i,
            column: dialect
                .columns
                .iter()
                .find(|c| c.position == i + 1)
                .and_then(|c| COLUMNS.iter().copied().find(|n| *n == c.column)),
        })
        .collect();
    let (encoding, bom) = dialect::encoding_of(&dialect, &sample);
    let text = match encoding == encoding_rs::UTF_8 {
        true => sample[bom..].to_vec(),
        false => encoding
            .decode_without_bom_handling(&sample[bom..])
            .0
            .into_owned()
            .into_bytes(),
    };
    let (rows, truncated) = read_rows(&text, whole, &dialect);
    Ok(Preview {
        dialect,
        mapping,
        rows,
        truncated,
    })
}

/// The first [`PREVIEW_ROWS`] data rows of the decoded sample, and whether the file goes on
/// after them. A record that reaches the end of a sample that is not the whole file may be
/// cut there: it is not shown.
fn read_rows(text: &[u8], whole: bool, dialect: &Dialect) -> (Vec<PreviewRow>, bool) {
    let columns = columns_of(dialect);
    let mut reader = RecordReader::with_dialect(text, 0, 1, false, dialect.delimiter_byte());
    let mut record = RawRecord::default();
    let mut rows = vec![];
    let mut header = true;
    loop {
        // A read error cannot happen on a slice; it ends the sample like its end does.
        let more = reader.read(&mut record).unwrap_or(false);
        if !more {
            return (rows, !whole);
        }
        if !whole && reader.position().0 >= text.len() as u64 {
            return (rows, true);
        }
        if std::mem::take(&mut header) {
            continue;
        }
        if rows.len() == PREVIEW_ROWS {
            return (rows, true);
        }
        rows.push(match validate_with(&record, &columns) {
            Row::Valid(c) => PreviewRow {
                line: record.line,
                values: std::array::from_fn(|i| match i {
                    0 => Some(c.email().to_string()),
                    i => c.field(i - 1).map(str::to_string),
                }),
                error: None,
            },
            Row::Invalid(e) => PreviewRow {
                line: record.line,
                values: e.fields,
                error: Some((e.code.as_str(), e.message)),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulk_import_core::options::{parse_columns, HeaderKind};

    fn cp1251(text: &str) -> Vec<u8> {
        encoding_rs::WINDOWS_1251.encode(text).0.into_owned()
    }

    #[test]
    fn a_windows_1251_file_previews_with_its_mapping_and_rows() {
        let file = cp1251(
            "E-mail Address;Given Name;Family Name;Mobile Number\r\n\
             Ivan@Example.ru;Иван;Петров;+7 900\r\nnot-an-email;Анна;;\r\n",
        );
        let p = preview(&file, true, &ImportOptions::default()).unwrap();
        assert_eq!(
            (p.dialect.delimiter.as_str(), p.dialect.encoding.as_str()),
            (";", "windows-1251")
        );
        let mapping: Vec<(usize, Option<&str>)> =
            p.mapping.iter().map(|m| (m.position, m.column)).collect();
        assert_eq!(
            mapping,
            [
                (0, Some("email")),
                (1, Some("first_name")),
                (2, Some("last_name")),
                (3, None)
            ]
        );
        assert_eq!(p.mapping[3].header, "Mobile Number");
        assert_eq!(p.rows.len(), 2);
        assert!(!p.truncated);
        assert_eq!(p.rows[0].line, 2);
        assert_eq!(p.rows[0].values[0].as_deref(), Some("ivan@example.ru"));
        assert_eq!(p.rows[0].values[1].as_deref(), Some("Иван"));
        assert_eq!(p.rows[0].values[3], None);
        assert_eq!(p.rows[0].error, None);
        assert_eq!(p.rows[1].error.as_ref().map(|e| e.0), Some("invalid_email"));
        assert_eq!(p.rows[1].values[0].as_deref(), Some("not-an-email"));
        // The explicit mapping reads the phone from "Mobile Number".
        let options = ImportOptions {
            columns: Some(parse_columns("email:E-mail Address,phone:Mobile Number").unwrap()),
            ..ImportOptions::default()
        };
        let p = preview(&file, true, &options).unwrap();
        assert_eq!(p.dialect.header, HeaderKind::Explicit);
        assert_eq!(p.mapping[3].column, Some("phone"));
        assert_eq!(p.mapping[1].column, None);
        assert_eq!(p.rows[0].values[3].as_deref(), Some("+7 900"));
        assert_eq!(p.rows[0].values[1], None);
    }

    #[test]
    fn a_long_file_shows_twenty_whole_rows() {
        let mut file = b"email,first_name\n".to_vec();
        let mut n = 0;
        while file.len() < 3 * SAMPLE_BYTES {
            n += 1;
            file.extend(format!("user{n}@example.com,Name {n}\n").bytes());
        }
        let p = preview(&file[..SAMPLE_BYTES], false, &ImportOptions::default()).unwrap();
        assert_eq!(p.rows.len(), PREVIEW_ROWS);
        assert!(p.truncated);
        assert_eq!(p.rows[19].values[0].as_deref(), Some("user20@example.com"));
        // A short file: every row, not truncated; 25 rows: 20 shown, truncated.
        let short = b"email\na@b.co\n";
        assert!(
            !preview(short, true, &ImportOptions::default())
                .unwrap()
                .truncated
        );
        let rows: String = (0..25).map(|i| format!("u{i}@b.co\n")).collect();
        let p = preview(
            format!("email\n{rows}").as_bytes(),
            true,
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!((p.rows.len(), p.truncated), (PREVIEW_ROWS, true));
        // The last record of a cut sample is not shown, however short the sample.
        let p = preview(b"email\na@b.co\nb@b.co", false, &ImportOptions::default()).unwrap();
        assert_eq!((p.rows.len(), p.truncated), (1, true));
    }

    #[test]
    fn a_gzip_head_is_decompressed_and_a_bad_mapping_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
        gz.write_all(b"Mail;Name\nann@b.co;Ann\n").unwrap();
        let file = gz.finish().unwrap();
        let p = preview(&file, true, &ImportOptions::default()).unwrap();
        assert_eq!(p.dialect.compression, "gzip");
        assert_eq!(p.rows[0].values[0].as_deref(), Some("ann@b.co"));
        let options = ImportOptions {
            columns: Some(parse_columns("email:E-mail").unwrap()),
            ..ImportOptions::default()
        };
        assert!(matches!(
            check_header(&file, true, &options),
            Err(HeaderError::HeaderNotFound { .. })
        ));
        assert!(check_header(&file, true, &ImportOptions::default()).is_ok());
    }
}
