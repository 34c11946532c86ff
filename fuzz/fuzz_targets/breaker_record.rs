#![no_main]
// See filters_core::fuzzing::breaker_record.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::breaker_record(data));
