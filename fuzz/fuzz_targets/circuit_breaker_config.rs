#![no_main]
// See filters_core::fuzzing::circuit_breaker_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::circuit_breaker_config(data));
