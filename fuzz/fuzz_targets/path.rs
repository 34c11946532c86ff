#![no_main]
// See filters_core::fuzzing::path.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::path(data));
