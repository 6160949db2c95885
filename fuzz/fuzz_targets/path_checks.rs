#![no_main]
//! libFuzzer target `path_checks`: the body is `fuzz_targets::path_checks`
//! (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::path_checks(data);
});
