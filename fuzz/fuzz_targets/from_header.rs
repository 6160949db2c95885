#![no_main]
//! libFuzzer target `from_header`: the body is `fuzz_targets::from_header` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::from_header(data);
});
