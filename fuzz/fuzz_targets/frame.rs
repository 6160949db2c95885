#![no_main]
//! libFuzzer target `frame`: the body is `fuzz_targets::frame` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::frame(data);
});
