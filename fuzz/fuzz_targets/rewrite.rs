#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenn_fuzz::rewrite(data));
