//! Dialect detection (encoding, delimiter, header columns) and decoding with the detected
//! dialect, resumed from any checkpoint, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulk_import_fuzz::checks::detect_and_read(data);
});
