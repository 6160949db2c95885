#![no_main]
//! libFuzzer target `mime`: the body is `fuzz_targets::mime` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::mime(data);
});
