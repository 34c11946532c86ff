#![no_main]
// See filters_core::fuzzing::breaker_expression.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::breaker_expression(data));
