#![no_main]
// See filters_core::fuzzing::rls_json_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| filters_core::fuzzing::rls_json_request(data));
