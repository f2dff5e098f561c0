#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sequencer::fuzzing::ingest_envelope(data));
