//! What a user may ask of an import besides its mode (`POST /imports` query parameters:
//! `dry_run`, `max_errors`, `delimiter`, `encoding`, `columns`), and the dialect the importer detected
//! and used (`dialect` in the job JSON). Both are stored with the job row.

pub use crate::column_map::{parse_columns, ColumnMap};
use serde::{Deserialize, Serialize};

/// Delimiters the importer recognises (docs/import-semantics.md, Dialect), in tie-breaking order.
pub const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Options of one import, as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOptions {
    /// Validate everything (`duplicate_in_db` included) and report, but write no customer row.
    pub dry_run: bool,
    /// Stop the job `failed` (`too_many_errors`) once more than this many rows are bad.
    pub max_errors: Option<i64>,
    /// Overrides delimiter detection: one of `,` `;` tab `|`.
    pub delimiter: Option<u8>,
    /// Overrides encoding detection: a canonical WHATWG encoding name (`windows-1251`).
    pub encoding: Option<String>,
    /// Overrides the header's detection: the explicit mapping of the columns to header cells.
    #[serde(default)]
    pub columns: Option<ColumnMap>,
}

impl ImportOptions {
    /// A stable text for the idempotency fingerprint: empty for the defaults, so that the
    /// fingerprints of plain uploads are what they always were.
    pub fn fingerprint_suffix(&self) -> String {
        if *self == ImportOptions::default() {
            return String::new();
        }
        let mut suffix = format!(
            ":dry_run={}:max_errors={}:delimiter={}:encoding={}",
            self.dry_run,
            self.max_errors.map(|n| n.to_string()).unwrap_or_default(),
            self.delimiter.map(|d| d.to_string()).unwrap_or_default(),
            self.encoding.as_deref().unwrap_or_default()
        );
        // Only when given, so that the fingerprints of earlier options stay what they were.
        if let Some(columns) = &self.columns {
            suffix.push_str(":columns=");
            suffix.push_str(&columns.to_json());
        }
        suffix
    }
}

/// Parses a `delimiter=` value: the character itself (`,` `;` `|`, a tab) or its name
/// (`comma`, `semicolon`, `tab`, `pipe`).
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    Ok(match s {
        "," | "comma" => b',',
        ";" | "semicolon" => b';',
        "\t" | "tab" | "\\t" => b'\t',
        "|" | "pipe" => b'|',
        other => {
            return Err(format!(
                "unknown delimiter {other:?}: expected one of , ; | tab (or comma, semicolon, pipe, tab)"
            ))
        }
    })
}

/// Parses an `encoding=` value: any WHATWG label (`utf-8`, `cp1251`, `windows-1252`,
/// `utf-16le`, `latin1`, …); returns the canonical name.
pub fn parse_encoding(s: &str) -> Result<&'static str, String> {
    match encoding_rs::Encoding::for_label(s.trim().as_bytes()) {
        // `replacement` and x-user-defined are labels, not encodings anyone exports in.
        Some(e) if e != encoding_rs::REPLACEMENT && e != encoding_rs::X_USER_DEFINED => {
            Ok(e.name())
        }
        _ => Err(format!(
            "unknown encoding {s:?}: expected a WHATWG encoding label such as utf-8, windows-1251, windows-1252, utf-16le"
        )),
    }
}

/// How the header was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderKind {
    /// At least one header name was recognised: columns are taken by name.
    ByName,
    /// No name was recognised: the five columns in their standard order.
    Positional,
    /// The upload's `columns=` said which header cell each column is in.
    Explicit,
}

/// One of the five columns and where it comes from in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedColumn {
    /// `email`, `first_name`, `last_name`, `phone` or `city`.
    pub column: String,
    /// The header cell it was recognised in, as written (positional: the cell at its place).
    pub header: String,
    /// 1-based position of the field in each record.
    pub position: usize,
}

/// The dialect an import was read with: detected at its first start (or overridden), then
/// kept, so that every later attempt reads the file the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialect {
    /// The delimiter as a one-character string (`,` `;` `\t` `|`).
    pub delimiter: String,
    /// Canonical encoding name (`UTF-8`, `windows-1251`, `UTF-16LE`, …).
    pub encoding: String,
    /// `gzip` when the upload was gzip-compressed (decompressed while read), else `none`.
    pub compression: String,
    pub header: HeaderKind,
    /// Fields each record must have: the header's count by name, 5 positionally.
    pub fields: usize,
    /// The columns found, in the standard order; missing optional ones are absent (NULL).
    pub columns: Vec<MappedColumn>,
    /// Header cells that were ignored, and other remarks.
    pub warnings: Vec<String>,
}

impl Dialect {
    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.as_bytes().first().copied().unwrap_or(b',')
    }

    pub fn is_gzip(&self) -> bool {
        self.compression == "gzip"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_delimiters() {
        assert_eq!(parse_encoding("cp1251").unwrap(), "windows-1251");
        assert_eq!(parse_encoding("latin1").unwrap(), "windows-1252");
        assert_eq!(parse_encoding("UTF-16").unwrap(), "UTF-16LE");
        assert!(parse_encoding("klingon").is_err());
        assert!(parse_encoding("replacement").is_err());
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert!(parse_delimiter("::").is_err());
        assert_eq!(ImportOptions::default().fingerprint_suffix(), "");
        let o = ImportOptions {
            dry_run: true,
            ..ImportOptions::default()
        };
        assert_ne!(o.fingerprint_suffix(), "");
        let mapped = ImportOptions {
            columns: Some(parse_columns("email:Mail").unwrap()),
            ..o.clone()
        };
        assert_eq!(
            mapped.fingerprint_suffix(),
            format!("{}:columns={{\"email\":\"Mail\"}}", o.fingerprint_suffix())
        );
    }
}
