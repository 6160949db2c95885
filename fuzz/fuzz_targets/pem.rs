#![no_main]
//! libFuzzer target `pem`: the body is `fuzz_targets::pem` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::pem(data);
});
