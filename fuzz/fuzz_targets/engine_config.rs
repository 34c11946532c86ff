#![no_main]
// See ratelimit_engine::fuzz_config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ratelimit_engine::fuzz_config(data));
