//! What the API reads of a file's head, with the importer's own code
//! (`bulk_import_importer::preview`): the preview's answer, and the check that a file
//! uploaded with `columns=` has the headers the mapping names.

use crate::{
    error::{ApiError, ApiResult},
    receive::Received,
};
use bulk_import_core::options::ImportOptions;
use bulk_import_importer::{
    mapping::HeaderError,
    preview::{self, Preview},
};
use bulk_import_types::{HeaderMapping, PreviewRow, PreviewValues, PreviewView, RowProblem};

/// A header that cannot be imported as asked: 422 `invalid_columns` (a mapped header the
/// file does not have) or `missing_email_column` (recognised names, none of them the email).
pub fn header_error(e: HeaderError) -> ApiError {
    let job = e.job_error();
    let code = match e {
        HeaderError::MissingEmailColumn(_) => "missing_email_column",
        HeaderError::HeaderNotFound { .. } => "invalid_columns",
    };
    ApiError::unprocessable(code, job.message)
}

/// The received file when its head suits an explicit mapping (or there is none); 422
/// `invalid_columns` when the mapping names a header the file does not have.
pub fn header_fits(options: &ImportOptions, received: Received) -> ApiResult<Received> {
    if options.columns.is_none() {
        return Ok(received);
    }
    let whole = received.head.len() as u64 == received.size;
    preview::check_header(&received.head, whole, options).map_err(header_error)?;
    Ok(received)
}

/// The preview of the file whose head was received.
pub fn preview_of(options: &ImportOptions, received: &Received) -> ApiResult<PreviewView> {
    let whole = received.head.len() as u64 == received.size;
    let found = preview::preview(&received.head, whole, options).map_err(header_error)?;
    Ok(view(found))
}

fn view(p: Preview) -> PreviewView {
    PreviewView {
        dialect: p.dialect.into(),
        mapping: p
            .mapping
            .into_iter()
            .map(|m| HeaderMapping {
                header: m.header,
                position: m.position,
                column: m.column.map(str::to_string),
            })
            .collect(),
        rows: p
            .rows
            .into_iter()
            .map(|r| {
                let [email, first_name, last_name, phone, city] = r.values;
                PreviewRow {
                    line: r.line,
                    values: PreviewValues {
                        email,
                        first_name,
                        last_name,
                        phone,
                        city,
                    },
                    valid: r.error.is_none(),
                    errors: r
                        .error
                        .into_iter()
                        .map(|(code, message)| RowProblem {
                            code: code.to_string(),
                            message,
                        })
                        .collect(),
                }
            })
            .collect(),
        truncated: p.truncated,
    }
}
