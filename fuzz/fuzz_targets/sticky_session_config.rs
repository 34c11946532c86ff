#![no_main]
// See filters_core::fuzzing::sticky_session_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::sticky_session_config(data));
