//! Support for the fuzz targets: the invariants they check live in `checks`, which the main
//! test suite includes too (`importer/tests/it/properties.rs`) to replay the corpus.

pub mod checks;
