#![no_main]
// See filters_core::fuzzing::retry_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::retry_config(data));
