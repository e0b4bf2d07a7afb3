//! `import FILE --preview`: `POST /imports/preview` with the file's first bytes, printed as
//! a table (or, with `--json`, the API's JSON as it came).

use crate::{
    api::Api,
    failure::{self, Failure},
    options::ImportOptions,
    output::Out,
};
use bulk_import_types::{PreviewRow, PreviewView};
use reqwest::multipart;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// The API reads at most this much of a file for a preview; one byte more tells it that the
/// file goes on.
const SENT_BYTES: u64 = 64 * 1024 + 1;
/// Characters of a value shown in the table, at most.
const CELL_CHARS: usize = 24;

pub async fn preview(
    api: &Api,
    file: &Path,
    name: &str,
    opts: &ImportOptions,
    out: &Out,
) -> Result<u8, Failure> {
    let cannot = |e: std::io::Error| Failure::usage(format!("cannot read {}: {e}", file.display()));
    let mut head = Vec::new();
    tokio::fs::File::open(file)
        .await
        .map_err(cannot)?
        .take(SENT_BYTES)
        .read_to_end(&mut head)
        .await
        .map_err(cannot)?;
    let part = multipart::Part::bytes(head)
        .file_name(name.to_string())
        .mime_str("text/csv")
        .expect("a valid mime type");
    let query = opts.dialect_query().replacen('&', "?", 1);
    let preview: PreviewView = api
        .send_form(
            &format!("/imports/preview{query}"),
            multipart::Form::new().part("file", part),
        )
        .await?;
    out.result(&table(&preview), &preview);
    Ok(failure::DONE)
}

fn cell(value: Option<&str>) -> String {
    let v = value.unwrap_or("").replace(['\r', '\n', '\t'], " ");
    if v.chars().count() > CELL_CHARS {
        let cut: String = v.chars().take(CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        v
    }
}

fn row_cells(r: &PreviewRow) -> Vec<String> {
    let v = &r.values;
    let check = match r.errors.first() {
        None => "ok".to_string(),
        Some(e) => format!("{}: {}", e.code, e.message),
    };
    [&v.email, &v.first_name, &v.last_name, &v.phone, &v.city]
        .into_iter()
        .map(|x| cell(x.as_deref()))
        .chain([check])
        .collect()
}

/// Lines of a table with aligned columns (the last one not padded).
fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == n {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// The preview for people: the dialect, the mapping, the rows and their checks.
pub fn table(p: &PreviewView) -> String {
    let d = &p.dialect;
    let delimiter = if d.delimiter == "\t" {
        "tab".to_string()
    } else {
        format!("{:?}", d.delimiter)
    };
    let mut lines = vec![format!(
        "delimiter {delimiter}, encoding {}, compression {}, header {}",
        d.encoding, d.compression, d.header
    )];
    lines.push(String::new());
    let mut mapping = vec![vec!["header".to_string(), "column".to_string()]];
    for m in &p.mapping {
        let column = m.column.as_deref().unwrap_or("(not imported)");
        mapping.push(vec![format!("{:?}", m.header), column.to_string()]);
    }
    lines.extend(aligned(&mapping));
    lines.push(String::new());
    let mut rows = vec![[
        "line",
        "email",
        "first_name",
        "last_name",
        "phone",
        "city",
        "check",
    ]
    .map(str::to_string)
    .to_vec()];
    for r in &p.rows {
        let mut cells = vec![r.line.to_string()];
        cells.extend(row_cells(r));
        rows.push(cells);
    }
    lines.extend(aligned(&rows));
    let bad = p.rows.iter().filter(|r| !r.valid).count();
    let more = if p.truncated {
        "; the file goes on"
    } else {
        ""
    };
    lines.push(format!("{} rows shown, {bad} bad{more}", p.rows.len()));
    lines.extend(d.warnings.iter().map(|w| format!("warning: {w}")));
    lines.join("\n")
}
