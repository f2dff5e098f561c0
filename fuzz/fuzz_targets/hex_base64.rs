#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sequencer::fuzzing::hex_base64(data));
