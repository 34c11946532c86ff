#![no_main]
// See filters_core::fuzzing::usage_body.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::usage_body(data));
