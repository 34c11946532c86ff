#![no_main]
// See filters_core::fuzzing::rate_limit_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::rate_limit_config(data));
