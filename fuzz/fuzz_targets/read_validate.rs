//! CSV reading, checkpoint resumption and row validation on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulk_import_fuzz::checks::read_and_validate(data);
});
