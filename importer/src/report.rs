//! `errors.csv`: one row per rejected line, in line order, with the original values. Cells a
//! spreadsheet would run as a formula are neutralised with a leading apostrophe.

use crate::validate::RowError;
use bulk_import_core::Storage;
use futures_util::TryStreamExt;
use sqlx::PgPool;
use std::borrow::Cow;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

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

/// Prefixes a cell that starts with `=`, `+`, `-`, `@`, tab or CR with `'`, the OWASP
/// recommendation against CSV injection.
pub fn neutralize(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
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

    pub fn buffered(&self) -> usize {
        self.wtr.get_ref().len()
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.wtr, writer())
            .into_inner()
            .expect("writing to memory")
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

/// Streams the job's error rows from Postgres into `key` in storage; returns the row count.
/// The object is only complete when this returns `Ok`; a failed attempt is overwritten by
/// the next one, and the job row names the report only after success.
pub async fn upload(
    pool: &PgPool,
    storage: &Storage,
    job_id: Uuid,
    key: &str,
) -> anyhow::Result<u64> {
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
        tx.write_all(&w.take()).await?;
        tx.shutdown().await?;
        anyhow::Ok(count)
    };
    let store = async {
        storage
            .put_stream(key, rx)
            .await
            .map_err(anyhow::Error::from)
    };
    let (count, _) = tokio::try_join!(produce, store)?;
    Ok(count)
}

/// Header of the re-importable file of bad rows: the five standard columns.
pub const ROWS_HEADER: [&str; 5] = ["email", "first_name", "last_name", "phone", "city"];

/// Streams the job's bad rows, in line order, as a CSV file in the five standard columns
/// with the standard header (`GET /imports/{id}/errors?format=rows`): fix it and upload it
/// again. Values are as read, not neutralised — the file is meant to be imported again, and
/// a neutralising apostrophe would become part of the data (errors.csv is the one to open in
/// a spreadsheet). Returns the row count.
pub async fn upload_rows(
    pool: &PgPool,
    storage: &Storage,
    job_id: Uuid,
    key: &str,
) -> anyhow::Result<u64> {
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
            w.write_record(cells.iter().map(|c| c.as_deref().unwrap_or("")))
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
        anyhow::Ok(count)
    };
    let store = async {
        storage
            .put_stream(key, rx)
            .await
            .map_err(anyhow::Error::from)
    };
    let (count, _) = tokio::try_join!(produce, store)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        for bad in ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx"] {
            assert_eq!(neutralize(bad), format!("'{bad}"));
        }
        assert_eq!(neutralize("plain"), "plain");
        assert_eq!(neutralize(""), "");
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
