//! Dialect detection (docs/import-semantics.md, Dialect): compression, encoding, delimiter and the header's columns,
//! from the first 64 KiB of the file (decompressed when it is gzip), unless overridden.
//!
//! - gzip: the magic bytes `1f 8b` at the start of the stored object.
//! - Encoding: a BOM decides (UTF-8, UTF-16 LE/BE). Otherwise UTF-8 when the sample is valid
//!   UTF-8 — or when it holds more valid multi-byte UTF-8 characters than invalid sequences,
//!   so that a UTF-8 file with a stray bad byte stays UTF-8 and only that row fails
//!   (`invalid_utf8`). Otherwise the legacy encoding `chardetng` guesses (windows-1251,
//!   windows-1252, …), decoded with `encoding_rs`. An ASCII file with a single high byte is
//!   therefore read as the legacy encoding chardetng names (usually windows-1252): that is
//!   what such files almost always are.
//! - Delimiter: of `,` `;` tab `|`, the one that splits the header line into the most fields
//!   (outside quotes); a tie goes to the earlier in that order, so `,` wins ties.
//! - Header: names compared after trimming, lower-casing and dropping spaces, `-` and `_`,
//!   against the spellings below. One recognised name makes the header `by_name`: columns
//!   in any order, unknown ones ignored (listed in `warnings`), a repeated one ignored after
//!   its first occurrence; no email column is then `missing_email_column`. No recognised name
//!   keeps the predecessor's positional five columns.
//!
//! A header that does not end within the sample is treated as unrecognised (positional),
//! with a warning. An explicit mapping (`columns=`) replaces the recognition of names
//! (`crate::mapping`).

use crate::mapping::{map_explicit, HeaderError, HeaderMap};
use crate::reader::{RawRecord, RecordReader};
use crate::validate::COLUMNS;
use bulk_import_core::options::{Dialect, HeaderKind, ImportOptions, MappedColumn, DELIMITERS};
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};

/// Bytes of the (decompressed) file that detection looks at.
pub const SAMPLE_BYTES: usize = 64 * 1024;

/// The spellings recognised for each of the five columns, normalised (`normalize`).
const SPELLINGS: [&[&str]; 5] = [
    &[
        "email",
        "mail",
        "emailaddress",
        "mailaddress",
        "почта",
        "электроннаяпочта",
        "емейл",
        "имейл",
    ],
    &["firstname", "givenname", "forename", "имя"],
    &["lastname", "surname", "familyname", "фамилия"],
    &[
        "phone",
        "phonenumber",
        "telephone",
        "tel",
        "mobile",
        "mobilephone",
        "телефон",
    ],
    &["city", "town", "город"],
];

/// Trims, lower-cases and drops spaces, `-` and `_` (also non-breaking spaces and a BOM).
pub fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\u{a0}' | '\u{feff}' | '\t' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which of the five columns a header cell names, if any.
pub fn recognise(name: &str) -> Option<usize> {
    let n = normalize(name);
    SPELLINGS.iter().position(|s| s.contains(&n.as_str()))
}

/// The gzip magic bytes.
pub fn is_gzip(start: &[u8]) -> bool {
    start.starts_with(&[0x1f, 0x8b])
}

/// The encoding and the length of the BOM to skip at the start of the (decompressed) file.
pub fn detect_encoding(
    sample: &[u8],
    whole_file: bool,
    requested: Option<&str>,
) -> (&'static Encoding, usize) {
    let bom = Encoding::for_bom(sample);
    if let Some(label) = requested {
        let enc = Encoding::for_label(label.as_bytes()).unwrap_or(UTF_8);
        // A BOM of the requested encoding is still skipped.
        let skip = match bom {
            Some((e, n)) if e == enc => n,
            _ => 0,
        };
        return (enc, skip);
    }
    if let Some((enc, n)) = bom {
        return (enc, n);
    }
    if mostly_utf8(sample, whole_file) {
        return (UTF_8, 0);
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(sample, whole_file);
    (detector.guess(None, false), 0)
}

/// Valid UTF-8, or more valid multi-byte characters than invalid sequences.
fn mostly_utf8(sample: &[u8], whole_file: bool) -> bool {
    let (mut valid_multibyte, mut invalid) = (0usize, 0usize);
    let mut rest = sample;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                valid_multibyte += s.chars().filter(|c| !c.is_ascii()).count();
                break;
            }
            Err(e) => {
                let (good, after) = rest.split_at(e.valid_up_to());
                valid_multibyte += std::str::from_utf8(good)
                    .expect("valid up to here")
                    .chars()
                    .filter(|c| !c.is_ascii())
                    .count();
                match e.error_len() {
                    Some(n) => {
                        invalid += 1;
                        rest = &after[n..];
                    }
                    // Cut in the middle of a character by the end of the sample.
                    None => {
                        if whole_file {
                            invalid += 1;
                        }
                        break;
                    }
                }
            }
        }
    }
    invalid == 0 || valid_multibyte > invalid
}

/// The first line of `text` (up to an unquoted CR or LF), and whether it ended in the text.
fn first_line(text: &[u8]) -> (&[u8], bool) {
    let mut quoted = false;
    for (i, &b) in text.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\r' | b'\n' if !quoted => return (&text[..i], true),
            _ => {}
        }
    }
    (text, false)
}

/// The delimiter that splits the header line into the most fields (ties: `,` `;` tab `|`).
pub fn detect_delimiter(header_line: &[u8]) -> u8 {
    let mut best = (0usize, b',');
    for d in DELIMITERS {
        let mut quoted = false;
        let count = header_line
            .iter()
            .filter(|&&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                !quoted && b == d
            })
            .count();
        if count > best.0 {
            best = (count, d);
        }
    }
    best.1
}

/// Maps the header's cells (already decoded) to the five columns.
pub fn map_header(cells: &[String]) -> Result<HeaderMap, HeaderError> {
    let mut found: [Option<usize>; 5] = [None; 5];
    let mut warnings = vec![];
    for (i, cell) in cells.iter().enumerate() {
        match recognise(cell) {
            Some(c) if found[c].is_none() => found[c] = Some(i),
            Some(c) => warnings.push(format!(
                "column {} {:?} repeats {} (column {}) and was ignored",
                i + 1,
                cell,
                COLUMNS[c],
                found[c].expect("seen") + 1
            )),
            None => warnings.push(format!(
                "column {} {:?} is not one of the known columns and was ignored",
                i + 1,
                cell
            )),
        }
    }
    if found.iter().all(Option::is_none) {
        let columns = (0..COLUMNS.len())
            .map(|i| MappedColumn {
                column: COLUMNS[i].to_string(),
                header: cells.get(i).cloned().unwrap_or_default(),
                position: i + 1,
            })
            .collect();
        return Ok((HeaderKind::Positional, COLUMNS.len(), columns, vec![]));
    }
    if found[0].is_none() {
        let names = found
            .iter()
            .flatten()
            .map(|&i| format!("{:?}", cells[i]))
            .collect();
        return Err(HeaderError::MissingEmailColumn(names));
    }
    let columns = found
        .iter()
        .enumerate()
        .filter_map(|(c, i)| {
            i.map(|i| MappedColumn {
                column: COLUMNS[c].to_string(),
                header: cells[i].clone(),
                position: i + 1,
            })
        })
        .collect();
    Ok((HeaderKind::ByName, cells.len(), columns, warnings))
}

/// Detects the whole dialect from the first bytes of the file (`sample`, decompressed when
/// `gzip`; `whole_file` when that is all of it), honouring the overrides.
pub fn detect(
    sample: &[u8],
    whole_file: bool,
    gzip: bool,
    options: &ImportOptions,
) -> Result<Dialect, HeaderError> {
    detect_with_header(sample, whole_file, gzip, options).map(|(dialect, _)| dialect)
}

/// [`detect`], and the header's cells as read (empty when the header line does not end
/// within the sample).
pub fn detect_with_header(
    sample: &[u8],
    whole_file: bool,
    gzip: bool,
    options: &ImportOptions,
) -> Result<(Dialect, Vec<String>), HeaderError> {
    let (encoding, bom) = detect_encoding(sample, whole_file, options.encoding.as_deref());
    let decoded: Vec<u8> = if encoding == UTF_8 {
        sample[bom..].to_vec()
    } else {
        let (text, _) = encoding.decode_without_bom_handling(&sample[bom..]);
        text.into_owned().into_bytes()
    };
    // Blank lines before the header are skipped, as the reader skips them.
    let start = decoded
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(decoded.len());
    let (line, ended) = first_line(&decoded[start..]);
    let delimiter = options.delimiter.unwrap_or_else(|| detect_delimiter(line));
    let mut warnings = vec![];
    let cells: Vec<String> = if ended || whole_file {
        let mut reader = RecordReader::with_dialect(&decoded[start..], 1, 1, false, delimiter);
        let mut rec = RawRecord::default();
        match reader.read(&mut rec) {
            Ok(true) if !rec.oversize => (0..rec.len())
                .map(|i| String::from_utf8_lossy(rec.field(i).unwrap_or_default()).into_owned())
                .collect(),
            _ => vec![],
        }
    } else {
        warnings.push(format!(
            "the header line is longer than {} KiB; columns are taken by position",
            SAMPLE_BYTES / 1024
        ));
        vec![]
    };
    let (header, fields, columns, more) = match &options.columns {
        Some(map) => map_explicit(&cells, map)?,
        None => map_header(&cells)?,
    };
    warnings.extend(more);
    let dialect = Dialect {
        delimiter: (delimiter as char).to_string(),
        encoding: encoding.name().to_string(),
        compression: if gzip { "gzip" } else { "none" }.to_string(),
        header,
        fields,
        columns,
        warnings,
    };
    Ok((dialect, cells))
}

/// The encoding of a recorded dialect, and the BOM length to skip at the file's start.
pub fn encoding_of(d: &Dialect, start: &[u8]) -> (&'static Encoding, usize) {
    let enc = Encoding::for_label(d.encoding.as_bytes()).unwrap_or(UTF_8);
    let bom = match Encoding::for_bom(start) {
        Some((e, n)) if e == enc => n,
        _ => 0,
    };
    (enc, bom)
}

/// Whether the encoding is read as UTF-16 (two bytes per code unit).
pub fn is_utf16(enc: &'static Encoding) -> bool {
    enc == UTF_16LE || enc == UTF_16BE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(bytes: &[u8]) -> Dialect {
        detect(bytes, true, false, &ImportOptions::default()).unwrap()
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(recognise(" E-Mail "), Some(0));
        assert_eq!(recognise("First Name"), Some(1));
        assert_eq!(recognise("first_name"), Some(1));
        assert_eq!(recognise("Электронная почта"), Some(0));
        assert_eq!(recognise("ФАМИЛИЯ"), Some(2));
        assert_eq!(recognise("Phone Number"), Some(3));
        assert_eq!(recognise("Notes"), None);
    }

    #[test]
    fn delimiter_is_the_one_with_most_fields() {
        assert_eq!(detect_delimiter(b"a,b,c"), b',');
        assert_eq!(detect_delimiter(b"a;b;c,d"), b';');
        assert_eq!(detect_delimiter(b"a\tb\tc"), b'\t');
        assert_eq!(detect_delimiter(b"a|b"), b'|');
        assert_eq!(detect_delimiter(b"a;b,c"), b',');
        assert_eq!(detect_delimiter(b"\"a;b;c\",d"), b',');
        assert_eq!(detect_delimiter(b"abc"), b',');
    }

    #[test]
    fn standard_header_is_by_name_and_identity() {
        let got = d(b"email,first_name,last_name,phone,city\na@b.c,,,,\n");
        assert_eq!(got.header, HeaderKind::ByName);
        assert_eq!(got.fields, 5);
        let pos: Vec<usize> = got.columns.iter().map(|c| c.position).collect();
        assert_eq!(pos, [1, 2, 3, 4, 5]);
        assert!(got.warnings.is_empty());
    }

    #[test]
    fn reordered_extra_and_unknown() {
        let got = d(b"City;Notes;E-mail;First Name\n");
        assert_eq!(got.delimiter, ";");
        assert_eq!(got.fields, 4);
        let cols: Vec<(&str, usize)> = got
            .columns
            .iter()
            .map(|c| (c.column.as_str(), c.position))
            .collect();
        assert_eq!(cols, [("email", 3), ("first_name", 4), ("city", 1)]);
        assert_eq!(got.warnings.len(), 1);
        assert!(got.warnings[0].contains("Notes"));
        let got = d(b"foo,bar,baz\n");
        assert_eq!(got.header, HeaderKind::Positional);
        assert_eq!(got.fields, 5);
        assert!(matches!(
            detect(b"name,phone\n", true, false, &ImportOptions::default()),
            Err(HeaderError::MissingEmailColumn(_))
        ));
    }

    #[test]
    fn encodings() {
        let (text, _, _) = encoding_rs::WINDOWS_1251.encode(
            "Email;Имя;Фамилия;Телефон;Город\r\nivan@example.ru;Иван;Петров;+7 900;Москва\r\n",
        );
        let got = d(&text);
        assert_eq!(got.encoding, "windows-1251");
        assert_eq!(got.delimiter, ";");
        assert_eq!(got.header, HeaderKind::ByName);
        assert_eq!(got.columns.len(), 5);
        let mut utf16 = vec![0xFF, 0xFE];
        for u in "email\tname\r\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        let got = d(&utf16);
        assert_eq!(
            (got.encoding.as_str(), got.delimiter.as_str()),
            ("UTF-16LE", "\t")
        );
        // UTF-8 with one stray byte stays UTF-8.
        let mut f = "email,first_name\nann@b.c,Иван\nb@c.d,Jörg\n"
            .as_bytes()
            .to_vec();
        f.extend_from_slice(b"x@y.z,Jo\xffrg\n");
        let got = d(&f);
        assert_eq!(got.encoding, "UTF-8");
        let forced = detect(
            b"email\n",
            true,
            false,
            &ImportOptions {
                encoding: Some("windows-1252".into()),
                delimiter: Some(b'|'),
                ..ImportOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            (forced.encoding.as_str(), forced.delimiter.as_str()),
            ("windows-1252", "|")
        );
    }
}
