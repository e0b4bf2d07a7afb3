//! The errors.csv writer: what it writes parses back to the values written (neutralised).
#![no_main]

use bulk_import_fuzz::checks::{report_roundtrip, ReportRow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<ReportRow>, u8)| {
    let (rows, take_after) = input;
    report_roundtrip(&rows, take_after as usize);
});
