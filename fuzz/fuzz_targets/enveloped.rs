#![no_main]
//! libFuzzer target `enveloped`: the body is `fuzz_targets::enveloped` (fuzz-targets/src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_targets::enveloped(data);
});
