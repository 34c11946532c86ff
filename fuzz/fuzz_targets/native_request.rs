#![no_main]
// See resilience::fake_envoy::fuzz_request: the native module's exported
// hooks (configuration, request and response) on arbitrary configurations
// and headers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| resilience::fake_envoy::fuzz_request(data));
