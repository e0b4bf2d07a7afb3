//! The job JSON the API returns: the types of `bulk_import_types`, shared with the CLI
//! (the conversions from the job row are in `bulk_import_core::view`).

pub use bulk_import_types::{ColumnView, CreatedBy, DialectView, JobPage, JobView};
