#![no_main]
//! libFuzzer target `ocsp`: the body is `fuzz_targets::ocsp` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::ocsp(data);
});
