//! The log's pure parts against a from-scratch RFC 6962 reference (written here from RFC 9162 §2.1,
//! sharing no code with `tlog_tiles`) and against `tlog_tiles`'s own verifiers.

use std::collections::HashMap;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

// ---- RFC 9162 §2.1, from scratch ----

fn ref_leaf(d: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update([0u8]).chain_update(d).finalize().into()
}

fn ref_node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().into()
}

/// Largest power of two smaller than n (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_mth(d: &[Vec<u8>]) -> [u8; 32] {
    match d.len() {
        0 => Sha256::digest([]).into(),
        1 => ref_leaf(&d[0]),
        n => {
            let k = split(n);
            ref_node(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<[u8; 32]> {
    let n = d.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<[u8; 32]> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![ref_mth(d)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_consistency(m: usize, d: &[Vec<u8>]) -> Vec<[u8; 32]> {
    ref_subproof(m, d, true)
}

// ---- a stored log, as the database holds it ----

#[derive(Default)]
struct Stored {
    size: u64,
    tiles: HashMap<TileKey, Vec<u8>>,
    root: Option<Hash>,
}

impl Stored {
    fn append(&mut self, entries: &[Vec<u8>]) {
        let edge: HashMap<TileKey, Vec<u8>> = edge_tiles(self.size)
            .into_iter()
            .map(|(l, n, w)| ((l, n), self.tiles[&(l, n)][..w as usize * 32].to_vec()))
            .collect();
        let out = append(self.size, &edge, entries).unwrap();
        for (k, d) in out.tiles {
            let old = self.tiles.insert(k, d.clone());
            if let Some(old) = old {
                assert!(d.starts_with(&old), "a tile only grows: {k:?}");
                assert!(old.len() < 8192, "a full tile is never rewritten: {k:?}");
            }
        }
        self.size = out.size;
        self.root = Some(out.root);
    }

    fn tile_set(&self) -> TileSet {
        TileSet { tiles: self.tiles.clone() }
    }
}

/// tlog_tiles's authenticated tile reader over our stored tiles, cut to what a tree of `size` has.
struct Reader<'a>(&'a Stored);

impl tlog_tiles::TileReader for Reader<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let data = self.0.tiles.get(&(t.level(), t.level_index())).ok_or(tlog_tiles::Error::InvalidTile)?;
                data.get(..t.width() as usize * 32).map(<[u8]>::to_vec).ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }

    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

fn entries(n: usize, salt: u8) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{{\"event\":{i},\"salt\":{salt}}}").into_bytes()).collect()
}

fn check_against_reference(all: &[Vec<u8>], stored: &Stored, probes: &[usize]) {
    let n = all.len();
    let root = stored.root.unwrap();
    assert_eq!(root.0, ref_mth(all), "root of {n} entries");
    let tiles = stored.tile_set();
    assert_eq!(tlog_tiles::tree_hash(n as u64, &tiles).unwrap(), root);
    // tlog_tiles authenticates every tile it reads against the root.
    let reader = Reader(stored);
    let authenticated = tlog_tiles::TileHashReader::new(n as u64, root, &reader);
    for &p in probes {
        let m = p % n;
        let proof = tlog_tiles::prove_record(n as u64, m as u64, &tiles).unwrap();
        let want: Vec<Hash> = ref_path(m, all).into_iter().map(Hash).collect();
        assert_eq!(proof, want, "inclusion of {m} in {n}");
        tlog_tiles::check_record(&proof, n as u64, root, m as u64, Hash(ref_leaf(&all[m]))).unwrap();
        let leaf = authenticated.read_hashes(&[tlog_tiles::stored_hash_index(0, m as u64)]).unwrap();
        assert_eq!(leaf[0].0, ref_leaf(&all[m]));

        let old = m + 1;
        let proof = tlog_tiles::prove_tree(n as u64, old as u64, &tiles).unwrap();
        let want: Vec<Hash> = ref_consistency(old, all).into_iter().map(Hash).collect();
        assert_eq!(proof, want, "consistency {old} -> {n}");
        let old_root = Hash(ref_mth(&all[..old]));
        assert_eq!(tlog_tiles::tree_hash(old as u64, &tiles).unwrap(), old_root);
        tlog_tiles::check_tree(&proof, n as u64, root, old as u64, old_root).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_appends_gives_the_rfc_6962_tree_and_proofs(
        cuts in proptest::collection::vec(1usize..300, 1..6),
        probes in proptest::collection::vec(0usize..100_000, 4),
    ) {
        let total: usize = cuts.iter().sum();
        let all = entries(total, 1);
        let mut stored = Stored::default();
        let mut at = 0;
        for c in &cuts {
            stored.append(&all[at..at + c]);
            at += c;
            check_against_reference(&all[..at], &stored, &probes);
        }
    }
}

proptest! {
    #[test]
    fn no_tile_path_makes_the_parser_panic(path in "[0-9x./a-z]{0,40}") {
        let _ = parse_tile_path(&path);
    }
}

#[test]
fn a_tree_past_two_tile_levels_keeps_its_tiles_and_proofs_right() {
    // 65,536 + 300 entries: a full level-1 tile, so level-2 tiles exist; cut at awkward points.
    let all = entries(65_836, 2);
    let mut stored = Stored::default();
    for range in [0..1, 1..255, 255..257, 257..65_535, 65_535..65_537, 65_537..65_836] {
        stored.append(&all[range]);
    }
    assert!(stored.tiles.contains_key(&(2, 0)));
    assert_eq!(stored.tiles[&(1, 0)].len(), 8192);
    check_against_reference(&all, &stored, &[0, 255, 256, 65_535, 65_536, 65_835, 31_337]);
}

#[test]
fn an_empty_append_changes_nothing_and_a_wrong_edge_is_refused() {
    let mut stored = Stored::default();
    stored.append(&entries(10, 3));
    let edge: HashMap<TileKey, Vec<u8>> = [((0, 0), stored.tiles[&(0, 0)].clone())].into();
    let out = append(10, &edge, &[]).unwrap();
    assert!(out.tiles.is_empty());
    assert_eq!(out.root, stored.root.unwrap());
    // An edge tile of the wrong width (a tree that is not the one we think) is an error, not a fork.
    assert!(append(11, &edge, &entries(1, 4)).is_err());
    assert!(append(10, &HashMap::new(), &entries(1, 4)).is_err());
    assert!(append(10, &edge, &[vec![0; MAX_ENTRY_BYTES + 1]]).is_err());
}

#[test]
fn tile_paths_follow_c2sp_tlog_tiles() {
    assert_eq!(parse_tile_path("0/000"), Some(TileRequest { level: Some(0), index: 0, width: 256 }));
    assert_eq!(parse_tile_path("1/x001/234.p/7"), Some(TileRequest { level: Some(1), index: 1234, width: 7 }));
    assert_eq!(parse_tile_path("entries/005.p/255"), Some(TileRequest { level: None, index: 5, width: 255 }));
    for bad in [
        "0/0",
        "0/000.p/0",
        "0/000.p/256",
        "entries/x000/001",
        "01/000",
        "64/000",
        "255/000",
        "data/000",
        "0/000.p/x",
        "0/000/",
    ] {
        assert_eq!(parse_tile_path(bad), None, "{bad}");
    }
    assert_eq!(tile_path(Some(1), 1234, 7), "1/x001/234.p/7");
    assert_eq!(tile_path(None, 5, 256), "entries/005");
}

#[test]
fn entry_bundles_hold_length_prefixed_entries_and_cut_to_any_width() {
    let mut b = Vec::new();
    bundle_push(&mut b, b"ab");
    bundle_push(&mut b, b"");
    bundle_push(&mut b, b"xyz");
    assert_eq!(b, b"\x00\x02ab\x00\x00\x00\x03xyz");
    assert_eq!(bundle_entries(&b).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
    assert_eq!(bundle_prefix(&b, 2).unwrap(), b"\x00\x02ab\x00\x00");
    assert_eq!(bundle_prefix(&b, 4), None);
    assert_eq!(bundle_entries(b"\x00\x05ab"), None);
    assert_eq!(entry_bundle(&[b"ab".to_vec(), vec![], b"xyz".to_vec()]), b);
}

#[test]
fn an_event_too_large_for_a_bundle_is_logged_without_its_payload() {
    let small = serde_json::json!({"payload": {"a": 1}, "payload_hash": "0x01"});
    assert_eq!(entry_bytes(&small).unwrap(), serde_json::to_vec(&small).unwrap());
    let big = serde_json::json!({"payload": {"a": "x".repeat(70_000)}, "payload_hash": "0x01"});
    let e = entry_bytes(&big).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&e).unwrap();
    assert_eq!(back, serde_json::json!({"payload_hash": "0x01"}));
}

#[test]
fn the_log_origin_cannot_be_mistaken_for_the_commitment_checkpoint_origin() {
    let s = StreamKey { tenant_id: uuid::Uuid::from_u128(1), store_id: uuid::Uuid::from_u128(2) };
    let o = origin("stateset-sequencer", s);
    assert_eq!(o, format!("stateset-sequencer/tlog/{}/{}", s.tenant_id, s.store_id));
    let signer =
        crate::checkpoint::CheckpointSigner::new("stateset-sequencer", ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
    assert_ne!(o, signer.origin(s));
}

/// A cosigner written from C2SP tlog-cosignature, independently of `witness.rs`.
fn cosign(name: &str, key: &ed25519_dalek::SigningKey, time: u64, note_text: &[u8]) -> String {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let mut pk = vec![0x04];
    pk.extend_from_slice(key.verifying_key().as_bytes());
    let id: [u8; 4] =
        Sha256::new().chain_update(name).chain_update("\n").chain_update(&pk).finalize()[..4].try_into().unwrap();
    let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
    msg.extend_from_slice(note_text);
    let mut blob = id.to_vec();
    blob.extend_from_slice(&time.to_be_bytes());
    blob.extend_from_slice(&key.sign(&msg).to_bytes());
    format!("\u{2014} {name} {}\n", base64::engine::general_purpose::STANDARD.encode(blob))
}

fn witness_vkey(name: &str, key: &ed25519_dalek::SigningKey) -> String {
    use base64::Engine;
    let mut pk = vec![0x04];
    pk.extend_from_slice(key.verifying_key().as_bytes());
    format!("{name}+{:08x}+{}", signed_note::key_id(name, &pk), base64::engine::general_purpose::STANDARD.encode(&pk))
}

#[test]
fn a_bundle_verifies_offline_with_the_log_and_witness_keys_and_nothing_else() {
    let all = entries(300, 5);
    let mut stored = Stored::default();
    stored.append(&all);
    let signer =
        crate::checkpoint::CheckpointSigner::new("log.example", ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let s = StreamKey { tenant_id: uuid::Uuid::from_u128(1), store_id: uuid::Uuid::from_u128(2) };
    let text = checkpoint_text(&origin("log.example", s), 300, stored.root.unwrap()).unwrap();
    let mut note = sign_checkpoint(&text, &signer).unwrap();
    let wkey = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let wline = cosign("witness.example/w1", &wkey, 1_700_000_000, &text);
    let wvkey = witness_vkey("witness.example/w1", &wkey);
    let verifier = witness::CosignatureVerifier::new(&wvkey).unwrap();
    assert_eq!(witness::accepted_cosignatures(&note, &wline, &verifier), vec![wline.clone()]);
    note.extend_from_slice(wline.as_bytes());

    let index = 257u64;
    let proof = tlog_tiles::prove_record(300, index, &stored.tile_set()).unwrap();
    let b = bundle::format(&all[index as usize], index, &proof, &note);
    let text_b = String::from_utf8(b.clone()).unwrap();
    assert!(text_b.starts_with("c2sp.org/tlog-proof@v1\nextra "));
    assert!(text_b.contains("\nindex 257\n"));

    let log_key = vec![signer.verifier_key().to_owned()];
    let v = bundle::verify(&b, &log_key, std::slice::from_ref(&wvkey), 1).unwrap();
    assert_eq!((v.tree_size, v.index, v.witnesses.clone()), (300, 257, vec!["witness.example/w1".to_owned()]));
    assert_eq!(v.entry, all[257]);

    // Another entry, another index, another log key, a missing witness: each is refused.
    let other = bundle::format(&all[3], index, &proof, &note);
    assert!(bundle::verify(&other, &log_key, &[], 0).unwrap_err().contains("inclusion proof"));
    let shifted = bundle::format(&all[index as usize], index + 1, &proof, &note);
    assert!(bundle::verify(&shifted, &log_key, &[], 0).is_err());
    let stranger =
        crate::checkpoint::CheckpointSigner::new("log.example", ed25519_dalek::SigningKey::from_bytes(&[8; 32]));
    assert!(bundle::verify(&b, &[stranger.verifier_key().to_owned()], &[], 0).is_err());
    assert!(bundle::verify(&b, &log_key, &[], 1).unwrap_err().contains("witness"));
    // A cosignature over another checkpoint does not count.
    let forged = cosign("witness.example/w1", &wkey, 1_700_000_000, b"log.example/x\n1\nAAAA\n");
    assert!(witness::accepted_cosignatures(&note, &forged, &verifier).is_empty());

    // A witness counts once, however many of its keys cosigned.
    let second = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
    let mut twice = note.clone();
    twice.extend_from_slice(cosign("witness.example/w1", &second, 1_700_000_001, &text).as_bytes());
    let b2 = bundle::format(&all[index as usize], index, &proof, &twice);
    let keys = [wvkey.clone(), witness_vkey("witness.example/w1", &second)];
    assert_eq!(bundle::verify(&b2, &log_key, &keys, 1).unwrap().witnesses, vec!["witness.example/w1".to_owned()]);
    assert!(bundle::verify(&b2, &log_key, &keys, 2).unwrap_err().contains("1 witness cosignature(s), 2 required"));
    // A "witness" named like the log, or like its origin, is refused rather than counted.
    for name in ["log.example", &origin("log.example", s)] {
        let err = bundle::verify(&b, &log_key, &[witness_vkey(name, &wkey)], 0).unwrap_err();
        assert!(err.contains("witness key"), "{name}: {err}");
    }
}

#[test]
fn a_cosigner_name_is_never_the_log_s_name_or_one_of_its_origins() {
    assert!(witness::check_cosigner_name("witness.example/w1", "log.example").is_ok());
    assert!(witness::check_cosigner_name("log.examples", "log.example").is_ok());
    assert!(witness::check_cosigner_name("log.example", "log.example").is_err());
    assert!(witness::check_cosigner_name("log.example/tlog/1/2", "log.example").is_err());
}

#[test]
fn witness_answers_are_classified_as_the_protocol_says() {
    let wkey = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let v = witness::CosignatureVerifier::new(&witness_vkey("w", &wkey)).unwrap();
    let note = b"o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 o AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
    assert_eq!(
        witness::classify_answer(409, Some("text/x.tlog.size"), "42\n", note, &v),
        witness::WitnessAnswer::SizeConflict(42)
    );
    assert!(matches!(witness::classify_answer(409, None, "", note, &v), witness::WitnessAnswer::Refused(409, _)));
    assert!(matches!(witness::classify_answer(422, None, "", note, &v), witness::WitnessAnswer::Refused(422, _)));
    assert!(matches!(
        witness::classify_answer(200, None, "garbage\n", note, &v),
        witness::WitnessAnswer::Refused(200, _)
    ));
    let body = witness::add_checkpoint_body(3, &[Hash([0; 32])], b"cp\n");
    assert_eq!(body, b"old 3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\ncp\n");
}

#[test]
fn witness_settings_are_checked_at_start_up() {
    let wkey = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let good = format!(r#"[{{"url":"https://w.example/sub","key":"{}"}}]"#, witness_vkey("w.example", &wkey));
    let vars =
        |pairs: Vec<(&'static str, String)>| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let c = TlogConfig::from_vars(vars(vec![("TLOG_WITNESSES", good), ("TLOG_INTEGRATE_INTERVAL_MS", "50".into())]))
        .unwrap();
    assert_eq!(c.witnesses.len(), 1);
    assert_eq!(c.integrate_interval, std::time::Duration::from_millis(50));
    for (var, value) in [
        ("TLOG_WITNESSES", "not json".to_owned()),
        ("TLOG_WITNESSES", r#"[{"url":"https://w","key":"w+00000000+AAAA"}]"#.to_owned()),
        ("TLOG_INTEGRATE_INTERVAL_MS", "0".to_owned()),
        ("TLOG_ENABLED", "maybe".to_owned()),
    ] {
        let err = TlogConfig::from_vars(vars(vec![(var, value)])).unwrap_err();
        assert_eq!(err.0, var);
    }
    assert_eq!(redact_url("https://user:secret@w.example:8443/path?x"), "https://w.example:8443");
}

#[test]
fn public_read_lists_streams_and_whole_tenants_and_refuses_anything_else_at_start_up() {
    let (t, s, other) = (
        uuid::Uuid::parse_str("6f1c2a70-5b3e-4c8d-9e0f-1a2b3c4d5e6f").unwrap(),
        uuid::Uuid::parse_str("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d").unwrap(),
        uuid::Uuid::parse_str("0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41").unwrap(),
    );
    let stream = |tenant_id, store_id| StreamKey { tenant_id, store_id };
    let listed = public_read::PublicRead::parse(&format!(" {t}/{s} , {}/*", other.to_string().to_uppercase())).unwrap();
    assert!(listed.covers(stream(t, s)));
    assert!(!listed.covers(stream(t, other)), "another store of a listed stream's tenant stays private");
    assert!(!listed.covers(stream(s, t)));
    assert!(listed.covers(stream(other, s)) && listed.covers(stream(other, other)), "<tenant>/* covers every store");
    for empty in ["", "  "] {
        assert!(public_read::PublicRead::parse(empty).unwrap().is_empty());
    }
    assert_eq!(TlogConfig::from_vars(|_| None).unwrap().public_read, public_read::PublicRead::default());

    for bad in [
        format!("{t}"),
        format!("{t}/{s},"),
        format!("{t}/{s},,{t}/*"),
        format!("*/{s}"),
        "*/*".to_owned(),
        format!("{t}/{s}/x"),
        format!("{}/{s}", t.simple()),
        format!("{t}/store-1"),
        format!("[\"{t}/{s}\"]"),
    ] {
        let err = TlogConfig::from_vars(|k| (k == "TLOG_PUBLIC_READ").then(|| bad.clone())).unwrap_err();
        assert_eq!(err.0, "TLOG_PUBLIC_READ", "{bad}");
        assert!(!err.1.is_empty(), "{bad}");
    }
}

#[test]
fn the_public_read_rate_defaults_to_100_per_second_and_0_lifts_it() {
    let rate = |v: &str| {
        TlogConfig::from_vars(|k| (k == "TLOG_PUBLIC_READ_RATE_PER_SECOND").then(|| v.to_owned()))
            .map(|c| c.public_read_per_second.map(|n| n.get()))
    };
    assert_eq!(TlogConfig::from_vars(|_| None).unwrap().public_read_per_second.map(|n| n.get()), Some(100));
    assert_eq!(rate(" 25 "), Ok(Some(25)));
    assert_eq!(rate("0"), Ok(None));
    for bad in ["-1", "ten", "1.5", ""] {
        assert_eq!(rate(bad).unwrap_err().0, "TLOG_PUBLIC_READ_RATE_PER_SECOND", "{bad}");
    }
}
