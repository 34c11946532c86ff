#![no_main]
// See filters_core::fuzzing::forwarded_for.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::forwarded_for(data));
