#![no_main]
//! libFuzzer target `decrypt_stream`: the body is `fuzz_targets::decrypt_stream` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::decrypt_stream(data);
});
