#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facerelay::fuzzing::join_token(data));
