#![no_main]
// See filters_core::fuzzing::rls_answer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::rls_answer(data));
