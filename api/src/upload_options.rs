//! The query options of an upload (`POST /imports`, and the same for `POST /imports/preview`):
//! `mode`, `dry_run`, `max_errors`, `delimiter`, `encoding` and `columns` (docs/api.md,
//! Upload options), each refused with its own 422 code when malformed.

use crate::error::{ApiError, ApiResult};
use bulk_import_core::{
    options::{self, ImportOptions},
    ImportMode,
};
use std::collections::HashMap;

/// `dry_run`, `max_errors`, `delimiter`, `encoding` and `columns` from the query (422 when
/// invalid).
pub fn import_options(params: &HashMap<String, String>) -> ApiResult<ImportOptions> {
    let invalid = |code: &'static str, message: String| ApiError::unprocessable(code, message);
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let dry_run = match get("dry_run") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(invalid(
                "invalid_dry_run",
                format!("dry_run must be true or false, not {other:?}"),
            ))
        }
    };
    let max_errors = match get("max_errors") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            invalid(
                "invalid_max_errors",
                "max_errors must be a whole number, 0 or more".into(),
            )
        })?),
    };
    // A literal tab is usually sent as %09; an unencoded one never survives a URL.
    let delimiter = get("delimiter")
        .map(options::parse_delimiter)
        .transpose()
        .map_err(|e| invalid("invalid_delimiter", e))?;
    let encoding = get("encoding")
        .map(options::parse_encoding)
        .transpose()
        .map_err(|e| invalid("invalid_encoding", e))?
        .map(str::to_string);
    let columns = get("columns")
        .map(options::parse_columns)
        .transpose()
        .map_err(|e| invalid("invalid_columns", e))?;
    Ok(ImportOptions {
        dry_run,
        max_errors,
        delimiter,
        encoding,
        columns,
    })
}

/// `mode` from the query: `insert_only` (the default) or `upsert` (422 otherwise).
pub fn parse_mode(params: &HashMap<String, String>) -> ApiResult<ImportMode> {
    match params.get("mode").map(String::as_str) {
        None | Some("") => Ok(ImportMode::InsertOnly),
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError::unprocessable("invalid_mode", e)),
    }
}
