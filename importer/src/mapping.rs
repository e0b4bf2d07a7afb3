//! The explicit column mapping (`columns=`, `bulk_import_core::column_map`) applied to a
//! file's header: each mapped column is read from the header cell it names (after trimming;
//! an exact match first, else one that differs only in case), every other cell is ignored
//! (listed in the warnings). A named header the file does not have is
//! [`HeaderError::HeaderNotFound`]. docs/import-semantics.md, The header and the columns.

use bulk_import_core::column_map::COLUMN_NAMES;
use bulk_import_core::job_error::JobError;
use bulk_import_core::options::{ColumnMap, HeaderKind, MappedColumn};

/// Why a header cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Some names were recognised, but none is the email.
    MissingEmailColumn(Vec<String>),
    /// The explicit mapping names a header the file does not have.
    HeaderNotFound {
        column: &'static str,
        header: String,
        /// The file's header cells.
        cells: Vec<String>,
    },
}

impl HeaderError {
    /// The job-level failure: a stable code and a message.
    pub fn job_error(&self) -> JobError {
        match self {
            HeaderError::MissingEmailColumn(found) => JobError::new(
                "missing_email_column",
                format!(
                    "the header names the columns {} but none of them is the email \
                     (accepted names: email, e-mail, mail, email address, почта, электронная почта)",
                    found.join(", ")
                ),
            ),
            HeaderError::HeaderNotFound {
                column,
                header,
                cells,
            } => JobError::new(
                "invalid_columns",
                not_found_message(column, header, cells),
            ),
        }
    }
}

/// How a header maps: its kind, the fields a record must have, the columns found and the
/// warnings.
pub type HeaderMap = (HeaderKind, usize, Vec<MappedColumn>, Vec<String>);

/// Header cells shown in a "not found" message, at most.
const SHOWN_CELLS: usize = 12;
/// Characters of each header cell shown in a "not found" message, at most.
const SHOWN_CHARS: usize = 40;

fn clean(cell: &str) -> &str {
    cell.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Where `header` is among `cells` (0-based): an exact match after trimming, else the first
/// that matches ignoring case.
fn find(cells: &[String], header: &str) -> Option<usize> {
    cells.iter().position(|c| clean(c) == header).or_else(|| {
        let wanted = header.to_lowercase();
        cells.iter().position(|c| clean(c).to_lowercase() == wanted)
    })
}

/// Maps `cells` as `map` says; the header is then `explicit` and records have as many
/// fields as it has cells.
pub fn map_explicit(cells: &[String], map: &ColumnMap) -> Result<HeaderMap, HeaderError> {
    let mut columns = Vec::with_capacity(5);
    for (column, header) in map.pairs() {
        let Some(i) = find(cells, header) else {
            let column = COLUMN_NAMES
                .iter()
                .find(|c| **c == column)
                .expect("a known column");
            return Err(HeaderError::HeaderNotFound {
                column,
                header: header.to_string(),
                cells: cells.to_vec(),
            });
        };
        columns.push(MappedColumn {
            column: column.to_string(),
            header: cells[i].clone(),
            position: i + 1,
        });
    }
    let warnings = cells
        .iter()
        .enumerate()
        .filter(|(i, _)| !columns.iter().any(|c| c.position == i + 1))
        .map(|(i, cell)| format!("column {} {:?} is not mapped and was ignored", i + 1, cell))
        .collect();
    Ok((HeaderKind::Explicit, cells.len(), columns, warnings))
}

/// The message of [`HeaderError::HeaderNotFound`]: what was asked and what the file has.
pub fn not_found_message(column: &str, header: &str, cells: &[String]) -> String {
    if cells.is_empty() {
        return format!(
            "columns maps {column} to {header:?}, but the file's first line could not be read as a header"
        );
    }
    let mut shown: Vec<String> = cells
        .iter()
        .take(SHOWN_CELLS)
        .map(|c| format!("{:?}", c.chars().take(SHOWN_CHARS).collect::<String>()))
        .collect();
    if cells.len() > SHOWN_CELLS {
        shown.push(format!("and {} more", cells.len() - SHOWN_CELLS));
    }
    format!(
        "columns maps {column} to {header:?}, which is not a header of the file (its header: {})",
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulk_import_core::options::parse_columns;

    fn cells(s: &[&str]) -> Vec<String> {
        s.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn mapped_cells_are_found_by_name_and_the_rest_ignored() {
        let map = parse_columns("email:E-mail Address,phone:mobile number").unwrap();
        let header = cells(&["Given Name", " E-mail Address ", "Mobile Number", "Notes"]);
        let (kind, fields, columns, warnings) = map_explicit(&header, &map).unwrap();
        assert_eq!(kind, HeaderKind::Explicit);
        assert_eq!(fields, 4);
        let got: Vec<(&str, usize)> = columns
            .iter()
            .map(|c| (c.column.as_str(), c.position))
            .collect();
        assert_eq!(got, [("email", 2), ("phone", 3)]);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("Given Name"), "{warnings:?}");
    }

    #[test]
    fn a_missing_header_names_what_the_file_has() {
        let map = parse_columns("email:Mail").unwrap();
        let err = map_explicit(&cells(&["E-mail", "Name"]), &map).unwrap_err();
        let HeaderError::HeaderNotFound { column, header, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*column, header.as_str()), ("email", "Mail"));
        let job = err.job_error();
        assert_eq!(job.code, "invalid_columns");
        assert!(
            job.message.contains(r#""E-mail", "Name""#),
            "{}",
            job.message
        );
    }
}
