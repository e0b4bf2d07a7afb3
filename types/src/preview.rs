//! The answer of `POST /imports/preview` (docs/api.md): how the importer would read a file,
//! from its first 64 KiB.

use crate::DialectView;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewView {
    /// The dialect an import of this file with these options would use.
    pub dialect: DialectView,
    /// Every header cell, in order, with the column it maps to.
    pub mapping: Vec<HeaderMapping>,
    /// The first data rows (at most 20) as the importer would read them.
    pub rows: Vec<PreviewRow>,
    /// The file goes on after the rows shown (more rows, or more than the 64 KiB read).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderMapping {
    /// The header cell as written.
    pub header: String,
    /// 0-based place of the cell in the header.
    pub position: usize,
    /// `email`, `first_name`, `last_name`, `phone` or `city`; null: not imported.
    pub column: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewRow {
    /// Physical line of the file (the header is line 1).
    pub line: u64,
    /// A valid row: the values the import would store (email trimmed and lower-cased, empty
    /// values null); a bad row: the values as the bad-rows report shows them.
    pub values: PreviewValues,
    /// Whether the row passes every check of a single row.
    pub valid: bool,
    /// Why not: the first failed check, with the code and message of the bad-rows report.
    pub errors: Vec<RowProblem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewValues {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RowProblem {
    /// A row error code of docs/import-semantics.md, e.g. `invalid_email`.
    pub code: String,
    pub message: String,
}
