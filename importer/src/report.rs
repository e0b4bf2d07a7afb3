//! `errors.csv`: one row per rejected line, in line order, with the original values, and
//! `rows.csv`, the same rows in the five standard columns to fix and import again. Text a
//! spreadsheet would run as a formula is neutralised with an apostrophe — at the start of a
//! cell, and wherever a spreadsheet may start a new cell inside one (see [`neutralize`]).

use crate::validate::RowError;
use bulk_import_core::{db, storage::StorageError, Storage};
use futures_util::TryStreamExt;
use sqlx::PgPool;
use std::borrow::Cow;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// The code of errors.csv's last row when bad rows were counted but not stored.
pub const NOT_STORED: &str = "not_stored";

pub const HEADER: [&str; 8] = [
    "line",
    "code",
    "message",
    "email",
    "first_name",
    "last_name",
    "phone",
    "city",
];

/// Characters after which a spreadsheet may start a new cell inside one of ours: the list
/// separator (`,` or `;`, by locale, and tab), and a line break. A spreadsheet whose separator
/// is `;` splits a line of this comma-separated file at every `;`, and a quote that is not at
/// the start of one of its cells does not protect what follows; a line break in a quoted
/// value then ends its row.
const CELL_BREAKS: [char; 5] = [',', ';', '\t', '\r', '\n'];

/// errors.csv (for people): inserts `'` (the OWASP recommendation against CSV injection)
/// wherever a spreadsheet may start a cell — the start of the value, and after each of `,`
/// `;` tab CR LF in it — when what follows, after spaces and quotes, starts with `=`, `+`,
/// `-`, `@`, tab or CR. The value is changed; the exact one is in `import_errors`.
pub fn neutralize(cell: &str) -> Cow<'_, str> {
    guard(cell, |rest, _| {
        matches!(
            rest.as_bytes().first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
        )
    })
}

/// rows.csv (to import again): the same places as [`neutralize`], but a `+` or `-` is left
/// alone where the text a spreadsheet would take as the cell is a number: digits, spaces and
/// `+-().,/` (no name, reference or link: a phone `+47 22 33 44 55` is arithmetic at worst).
/// That text is known only where the cell is one of ours: the start of a value of a column
/// after the first (a spreadsheet splitting at `,` honours our quotes, and one splitting at
/// `;` does not start a cell there), or after a `,` inside a value (the rest of it). After a
/// `;`, a tab or a line break inside a value, and at the start of a line (`first_column`), a
/// spreadsheet splitting at `;` runs the cell on over our `,` into the next values, so every
/// `=`, `@`, `+` and `-` gets its `'` there. Every other value is written exactly, so the file
/// imports again to the same values; a neutralised one carries its `'` into the next import.
pub fn neutralize_for_import(cell: &str, first_column: bool) -> Cow<'_, str> {
    guard(cell, |rest, after| match rest.as_bytes().first() {
        Some(b'=' | b'@') => true,
        Some(b'+' | b'-') => {
            let own_cell = match after {
                None => !first_column,
                Some(c) => c == ',',
            };
            let number = rest
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().,/".contains(c));
            !(own_cell && number)
        }
        _ => false,
    })
}

/// Inserts `'` at each place a spreadsheet may start a cell (the start, and after each of
/// [`CELL_BREAKS`]) where `could_run` says the rest of the value (after spaces and quotes)
/// could run as a formula; it is told which break came before (`None` at the start).
fn guard(cell: &str, could_run: impl Fn(&str, Option<char>) -> bool) -> Cow<'_, str> {
    let starts = std::iter::once((0, None)).chain(
        cell.char_indices()
            .filter(|(_, c)| CELL_BREAKS.contains(c))
            .map(|(i, c)| (i + c.len_utf8(), Some(c))),
    );
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (start, after) in starts {
        if could_run(cell[start..].trim_start_matches([' ', '"']), after) {
            let out = out.get_or_insert_with(|| String::with_capacity(cell.len() + 4));
            out.push_str(&cell[copied..start]);
            out.push('\'');
            copied = start;
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(&cell[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(cell),
    }
}

/// Builds the report in memory chunk by chunk; [`ReportWriter::take`] hands out what is
/// buffered so that the caller can stream it.
pub struct ReportWriter {
    wtr: csv::Writer<Vec<u8>>,
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

impl Default for ReportWriter {
    fn default() -> Self {
        let mut wtr = writer();
        wtr.write_record(HEADER).expect("writing to memory");
        ReportWriter { wtr }
    }
}

impl ReportWriter {
    pub fn write(&mut self, line: i64, code: &str, message: &str, fields: &[Option<String>; 5]) {
        let line = line.to_string();
        let mut record: Vec<Cow<str>> =
            vec![Cow::Borrowed(&line), neutralize(code), neutralize(message)];
        record.extend(
            fields
                .iter()
                .map(|f| neutralize(f.as_deref().unwrap_or(""))),
        );
        self.wtr
            .write_record(record.iter().map(|c| c.as_bytes()))
            .expect("writing to memory");
    }

    pub fn write_error(&mut self, e: &RowError) {
        self.write(e.line, e.code.as_str(), &e.message, &e.fields);
    }

    /// The last row when a job counted more bad rows than it stored (`MAX_STORED_ERROR_ROWS`):
    /// no line, the code `not_stored`, and how many.
    pub fn write_not_stored(&mut self, stored: u64, not_stored: u64) {
        let message = format!(
            "{not_stored} more bad rows were counted but not stored: a job stores its first \
             {stored} (MAX_STORED_ERROR_ROWS)"
        );
        self.wtr
            .write_record(["", NOT_STORED, &message, "", "", "", "", ""])
            .expect("writing to memory");
    }

    pub fn buffered(&self) -> usize {
        self.wtr.get_ref().len()
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.wtr, writer())
            .into_inner()
            .expect("writing to memory")
    }
}

/// Why a report could not be written, by kind: the caller retries only what may pass.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the error rows: {0}")]
    Database(#[source] sqlx::Error),
    #[error("storing the report: {0}")]
    Storage(#[source] StorageError),
    /// The stream between the rows read and the object written broke (the other side
    /// stopped).
    #[error("streaming the report: {0}")]
    Stream(#[source] std::io::Error),
}

impl ReportError {
    /// Whether trying again may succeed: the database or storage unreachable, a broken
    /// stream. A missing bucket, a refused write, a query that cannot run are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ReportError::Database(e) => db::is_transient(e),
            ReportError::Storage(e) => e.is_transient(),
            ReportError::Stream(_) => true,
        }
    }
}

impl From<sqlx::Error> for ReportError {
    fn from(e: sqlx::Error) -> Self {
        ReportError::Database(e)
    }
}

impl From<std::io::Error> for ReportError {
    fn from(e: std::io::Error) -> Self {
        ReportError::Stream(e)
    }
}

type ErrorRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Streams the job's error rows from Postgres into `key` in storage; returns the bytes stored.
/// When the job counted more bad rows (`error_rows`) than it stored, a last row says how
/// many were not stored. The object is only complete when this returns `Ok`; a failed
/// attempt is overwritten by the next one, and the job row names the report only after
/// success.
pub async fn upload(
    pool: &PgPool,
    storage: &Storage,
    job_id: Uuid,
    key: &str,
    error_rows: i64,
) -> Result<u64, ReportError> {
    let (mut tx, rx) = tokio::io::duplex(256 * 1024);
    let produce = async move {
        let mut rows = sqlx::query_as::<_, ErrorRow>(
            "SELECT line, code, message, email, first_name, last_name, phone, city \
             FROM import_errors WHERE job_id = $1 ORDER BY line",
        )
        .bind(job_id)
        .fetch(pool);
        let mut w = ReportWriter::default();
        let mut count = 0u64;
        while let Some((line, code, message, e, f, l, p, c)) = rows.try_next().await? {
            w.write(line, &code, &message, &[e, f, l, p, c]);
            count += 1;
            if w.buffered() >= 64 * 1024 {
                tx.write_all(&w.take()).await?;
            }
        }
        let counted = u64::try_from(error_rows).unwrap_or(0);
        if counted > count {
            w.write_not_stored(count, counted - count);
        }
        tx.write_all(&w.take()).await?;
        tx.shutdown().await?;
        Ok::<_, ReportError>(count)
    };
    let store = async {
        storage
            .put_stream(key, rx)
            .await
            .map_err(ReportError::Storage)
    };
    let (_, stored) = tokio::try_join!(produce, store)?;
    Ok(stored)
}

/// Header of the re-importable file of bad rows: the five standard columns.
pub const ROWS_HEADER: [&str; 5] = ["email", "first_name", "last_name", "phone", "city"];

/// Streams the job's bad rows, in line order, as a CSV file in the five standard columns
/// with the standard header (`GET /imports/{id}/errors?format=rows`): fix it and upload it
/// again. Values are as read except text that could run as a formula
/// ([`neutralize_for_import`]): the file is opened in spreadsheets to be fixed, and imports
/// again to the same values. Only stored rows are in it (`MAX_STORED_ERROR_ROWS`), and no
/// summary row (it would be imported as data). Returns the bytes stored.
pub async fn upload_rows(
    pool: &PgPool,
    storage: &Storage,
    job_id: Uuid,
    key: &str,
) -> Result<u64, ReportError> {
    type Cells = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let (mut tx, rx) = tokio::io::duplex(256 * 1024);
    let produce = async move {
        let mut rows = sqlx::query_as::<_, Cells>(
            "SELECT email, first_name, last_name, phone, city \
             FROM import_errors WHERE job_id = $1 ORDER BY line",
        )
        .bind(job_id)
        .fetch(pool);
        let mut w = writer();
        w.write_record(ROWS_HEADER).expect("writing to memory");
        let mut count = 0u64;
        while let Some((e, f, l, p, c)) = rows.try_next().await? {
            let cells = [e, f, l, p, c];
            w.write_record(cells.iter().enumerate().map(|(i, c)| {
                neutralize_for_import(c.as_deref().unwrap_or(""), i == 0).into_owned()
            }))
            .expect("writing to memory");
            count += 1;
            if w.get_ref().len() >= 64 * 1024 {
                let buf = std::mem::replace(&mut w, writer())
                    .into_inner()
                    .expect("writing to memory");
                tx.write_all(&buf).await?;
            }
        }
        tx.write_all(&w.into_inner().expect("writing to memory"))
            .await?;
        tx.shutdown().await?;
        Ok::<_, ReportError>(count)
    };
    let store = async {
        storage
            .put_stream(key, rx)
            .await
            .map_err(ReportError::Storage)
    };
    let (_, stored) = tokio::try_join!(produce, store)?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        for bad in [
            "=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx", " =x", "\"=x\"",
        ] {
            assert_eq!(neutralize(bad), format!("'{bad}"));
        }
        assert_eq!(neutralize("plain"), "plain");
        assert_eq!(neutralize(""), "");
        assert!(matches!(neutralize("a;b, c"), Cow::Borrowed(_)));
    }

    #[test]
    fn formulas_after_a_separator_or_a_line_break_are_neutralised() {
        assert_eq!(neutralize("x;=cmd|' /C calc'!A0"), "x;'=cmd|' /C calc'!A0");
        assert_eq!(neutralize("a, +b;@c"), "a,' +b;'@c");
        assert_eq!(neutralize("a\n=b\r\n-c"), "a\n'=b\r\n'-c");
        assert_eq!(neutralize("a;\"=b"), "a;'\"=b");
        // A tab is both a separator and a character a cell must not start with.
        assert_eq!(neutralize("\t=x"), "'\t'=x");
        assert_eq!(neutralize("Смит; Джонс"), "Смит; Джонс");
    }

    #[test]
    fn rows_keep_every_value_that_cannot_run() {
        for keep in [
            "+47 22 33 44 55",
            "+1 (555) 010-0100",
            "+47 123, +47 456",
            "-",
            "-5",
            "Smith; Jones",
            "a,b",
            "O'Neil",
            "line1\nline2",
            "",
        ] {
            assert!(
                matches!(neutralize_for_import(keep, false), Cow::Borrowed(_)),
                "{keep:?}"
            );
        }
        let rows = |v| neutralize_for_import(v, false);
        assert_eq!(rows("x;=cmd|' /C calc'!A0"), "x;'=cmd|' /C calc'!A0");
        assert_eq!(rows("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(rows("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(rows("+cmd|x"), "'+cmd|x");
        assert_eq!(rows("-1+A1"), "'-1+A1");
        // The whole value is what a spreadsheet using `,` sees in the cell.
        assert_eq!(rows("+1;-A1"), "'+1;'-A1");
        assert_eq!(rows("a\r\n =b"), "a\r\n' =b");
        // Where a `;` spreadsheet starts a cell, it runs on over our `,` into the next value:
        // even a number there gets its `'`.
        assert_eq!(rows("+7 999; +7 998"), "'+7 999;' +7 998");
        assert_eq!(rows("a\n+1"), "a\n'+1");
        assert_eq!(neutralize_for_import("+1", true), "'+1");
        assert_eq!(neutralize_for_import("a@b.c", true), "a@b.c");
    }

    #[test]
    fn a_job_that_stored_fewer_rows_than_it_counted_says_so_last() {
        let mut w = ReportWriter::default();
        w.write(
            2,
            "invalid_email",
            "bad",
            &[Some("x".into()), None, None, None, None],
        );
        w.write_not_stored(1, 41);
        let bytes = w.take();
        let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(&bytes[..])
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][0], "");
        assert_eq!(&rows[1][1], NOT_STORED);
        assert!(
            rows[1][2].starts_with("41 more bad rows"),
            "{:?}",
            &rows[1][2]
        );
    }

    #[test]
    fn report_parses_back() {
        let mut w = ReportWriter::default();
        w.write(
            3,
            "invalid_email",
            "bad, \"quoted\"",
            &[Some("=x".into()), None, Some("a\nb".into()), None, None],
        );
        let bytes = w.take();
        let mut r = csv::Reader::from_reader(&bytes[..]);
        assert_eq!(r.headers().unwrap(), HEADER.as_slice());
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(
            rec.iter().collect::<Vec<_>>(),
            [
                "3",
                "invalid_email",
                "bad, \"quoted\"",
                "'=x",
                "",
                "a\nb",
                "",
                ""
            ]
        );
    }
}
