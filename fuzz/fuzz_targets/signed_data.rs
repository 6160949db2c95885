#![no_main]
//! libFuzzer target `signed_data`: the body is `fuzz_targets::signed_data` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::signed_data(data);
});
