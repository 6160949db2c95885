#![no_main]
//! libFuzzer target `request`: the body is `fuzz_targets::request` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::request(data);
});
