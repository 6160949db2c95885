#![no_main]
//! libFuzzer target `crl`: the body is `fuzz_targets::crl` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::crl(data);
});
