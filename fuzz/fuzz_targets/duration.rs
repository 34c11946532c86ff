#![no_main]
// See filters_core::fuzzing::duration.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::duration(data));
