#![no_main]
// See filters_core::fuzzing::cookie_header.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::cookie_header(data));
