#![no_main]
//! libFuzzer target `verify`: the body is `fuzz_targets::verify` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::verify(data);
});
