//! The fuzz targets (`sequencer::fuzzing`, run by `cargo fuzz` on nightly from `fuzz/`), bounded on
//! stable: each target over its corpus in `fuzz/corpus/<target>/`, then over generated inputs:
//! random bytes and corpus entries with bytes flipped, inserted and removed. `FUZZ_CASES` sets the
//! generated inputs per target (default 3000).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sequencer::fuzzing::TARGETS;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "{} has a corpus", dir.display());
    entries
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = data.len().max(1);
        match edit {
            Edit::Flip(i, b) if !data.is_empty() => data[i % len] ^= b,
            Edit::Insert(i, bytes) => {
                let at = i % (data.len() + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i, n) if !data.is_empty() => {
                let at = i % len;
                let end = (at + n).min(data.len());
                data.drain(at..end);
            }
            _ => {}
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let interesting = prop::sample::select(vec![
        b"\\u0000".to_vec(),
        b"\"".to_vec(),
        b"{".to_vec(),
        b"]".to_vec(),
        b"-5000-01-01T00:00:00Z".to_vec(),
        b"1e999".to_vec(),
        b"%00".to_vec(),
        b"%FF".to_vec(),
        vec![0xff, 0xfe],
        b"\\ud800".to_vec(),
        b"0x".to_vec(),
        b"==".to_vec(),
    ]);
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
            (any::<usize>(), prop_oneof![interesting, prop::collection::vec(any::<u8>(), 1..8)])
                .prop_map(|(i, b)| Edit::Insert(i, b)),
            (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        ],
        1..6,
    )
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_generated_inputs() {
    let cases: u32 = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        for seed in &seeds {
            target(seed);
        }
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let input = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (prop::sample::select(seeds.clone()), edits()).prop_map(|(seed, e)| apply(seed, &e)),
        ];
        runner
            .run(&input, |data| {
                target(&data);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("fuzz target {name}: {e}"));
    }
}
