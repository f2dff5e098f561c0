//! The transparency log over HTTP, checked with code that is not the sequencer's: `tlog_tiles`'s
//! authenticated tile reader and proof checkers, `signed_note` verification, and a C2SP tlog-witness
//! written here from the specification (tlog-witness, tlog-cosignature) that runs on 127.0.0.1:0.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash, HashReader, Tile, TileHashReader, TileReader};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Client side: plain HTTP and off-the-shelf verification.

async fn get_raw(api: &Api, path: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    let resp = api.request(reqwest::Method::GET, path).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn prefix(agent: &Agent) -> String {
    format!("/api/v1/ves/tlog/{}/{}", agent.tenant_id, agent.store_id)
}

/// Polls the checkpoint until it covers `size` entries; returns the verified checkpoint and note.
async fn checkpoint_at_least(api: &Api, agent: &Agent, size: u64, log_key: &str) -> (Checkpoint, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get_raw(api, &format!("{}/checkpoint", prefix(agent))).await;
        if status == 200 {
            let note = Note::from_bytes(&body).expect("checkpoint is a signed note");
            let verifier = StandardVerifier::new(log_key).unwrap();
            note.verify(&VerifierList::new(vec![Box::new(verifier)])).expect("signed with the log key");
            let cp = Checkpoint::from_bytes(note.text()).expect("a tlog-checkpoint");
            if cp.size() >= size {
                return (cp, body);
            }
        }
        assert!(Instant::now() < deadline, "the log did not reach {size} entries (last answer {status})");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Tiles fetched over HTTP, for tlog_tiles's authenticated reader.
struct HttpTiles(HashMap<(u8, u64, u32), Vec<u8>>);

impl TileReader for HttpTiles {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                self.0.get(&(t.level(), t.level_index(), t.width())).cloned().ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// The C2SP path of a tlog_tiles tile (which prints the Go sumdb form `tile/8/<L>/<N>`).
fn c2sp_path(t: &Tile) -> String {
    t.path().replacen("tile/8/", "tile/", 1)
}

async fn log_key(api: &Api) -> String {
    let (_, info) = api.get("/api/v1/ves/sequencer").await;
    info["checkpoint_verifier_key"].as_str().expect("checkpoint_verifier_key").to_owned()
}

async fn ingest_n(api: &Api, agent: &Agent, n: u64, from: u64) {
    let events: Vec<_> = (from..from + n).map(|i| agent.event(i)).collect();
    let (status, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventsAccepted"], n, "{body}");
}

#[tokio::test]
async fn every_event_is_in_its_streams_rfc_6962_log_and_off_the_shelf_verifiers_accept_tiles_and_proofs() {
    let server = TestServer::start_with(&[("TLOG_INTEGRATE_INTERVAL_MS", "20")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    for batch in 0..3 {
        ingest_n(&api, &agent, 100, batch * 100 + 1).await;
    }
    let key = log_key(&api).await;
    let (cp, _) = checkpoint_at_least(&api, &agent, 300, &key).await;
    assert_eq!(cp.size(), 300);
    assert_eq!(cp.origin(), format!("stateset-sequencer/tlog/{}/{}", agent.tenant_id, agent.store_id));
    let root = *cp.hash();
    // The integrator's own connections are told apart from the request pool's in pg_stat_activity.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database() ORDER BY 1",
    )
    .fetch_all(server.state.store.pool())
    .await
    .unwrap();
    assert!(names.iter().any(|n| n == sequencer::worker::tlog::INTEGRATOR_APPLICATION_NAME), "{names:?}");
    assert!(names.iter().any(|n| n == sequencer::store::APPLICATION_NAME), "{names:?}");

    // Every tile of the tree, fetched as any tlog-tiles client would, authenticated by tlog_tiles.
    let mut fetched = HashMap::new();
    for t in Tile::new_tiles(8, 0, 300) {
        let (status, headers, body) = get_raw(&api, &format!("{}/{}", prefix(&agent), c2sp_path(&t))).await;
        assert_eq!(status, 200, "{}", c2sp_path(&t));
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert!(headers["cache-control"].contains("immutable"), "{headers:?}");
        assert_eq!(body.len(), t.width() as usize * 32);
        fetched.insert((t.level(), t.level_index(), t.width()), body);
    }
    let tiles = HttpTiles(fetched);
    let reader = TileHashReader::new(300, root, &tiles);
    let indexes: Vec<u64> = (0..300).map(|i| tlog_tiles::stored_hash_index(0, i)).collect();
    let leaves = reader.read_hashes(&indexes).expect("tiles authenticate against the signed root");

    // The entries are the events exactly as GET /api/v1/ves/events serves them.
    let mut served = Vec::new();
    for from in [1, 101, 201] {
        let (_, page) = api
            .get(&format!(
                "/api/v1/ves/events?tenant_id={}&store_id={}&from={from}&limit=100",
                agent.tenant_id, agent.store_id
            ))
            .await;
        served.extend(page["events"].as_array().unwrap().iter().cloned());
    }
    let mut bundle_entries = Vec::new();
    for path in ["tile/entries/000", "tile/entries/001.p/44"] {
        let (status, _, body) = get_raw(&api, &format!("{}/{path}", prefix(&agent))).await;
        assert_eq!(status, 200, "{path}");
        let mut rest = &body[..];
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            bundle_entries.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
    }
    assert_eq!(bundle_entries.len(), 300);
    for (i, entry) in bundle_entries.iter().enumerate() {
        let event: Value = serde_json::from_slice(entry).unwrap();
        assert_eq!(event, served[i], "entry {i}");
        assert_eq!(entry, &serde_json::to_vec(&served[i]).unwrap(), "entry {i} is the served JSON, byte for byte");
        assert_eq!(leaves[i], tlog_tiles::record_hash(entry), "leaf {i}");
        // The signed envelope inside re-verifies.
        let envelope: ves::envelope::VesEventEnvelope = serde_json::from_value(event).unwrap();
        assert!(envelope.verify_signature(&agent.key.verifying_key()), "signature of entry {i}");
    }

    // Tiles beyond the tree, and malformed paths, are 404s; a partial tile is a prefix of the next.
    for path in ["tile/0/001", "tile/0/001.p/45", "tile/entries/002.p/1", "tile/0/000.p/0", "tile/x/000"] {
        let (status, headers, _) = get_raw(&api, &format!("{}/{path}", prefix(&agent))).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
    }
    let (_, _, p10) = get_raw(&api, &format!("{}/tile/0/001.p/10", prefix(&agent))).await;
    assert_eq!(p10, tiles.0[&(0, 1, 44)][..320]);

    // Inclusion by sequence number, event id and leaf hash, against an older tree size, whose root is
    // authenticated by a consistency proof to the signed checkpoint.
    let (status, c) = api.get(&format!("{}/proof/consistency?from_size=200", prefix(&agent))).await;
    assert_eq!(status, 200, "{c}");
    let old_root = Hash(B64.decode(c["from_root"].as_str().unwrap()).unwrap().try_into().unwrap());
    let proof: Vec<Hash> = hashes(&c["proof"]);
    tlog_tiles::check_tree(&proof, 300, root, 200, old_root).expect("consistency 200 -> 300");
    let event_id = served[149]["event_id"].as_str().unwrap().to_owned();
    let leaf_b64 = B64.encode(leaves[149].0);
    for query in [
        "sequence_number=150".to_owned(),
        format!("event_id={event_id}"),
        format!("leaf_hash={}", urlencode(&leaf_b64)),
        format!("leaf_hash=0x{}", hex::encode(leaves[149].0)),
    ] {
        let (status, p) = api.get(&format!("{}/proof/inclusion?{query}&tree_size=200", prefix(&agent))).await;
        assert_eq!(status, 200, "{query}: {p}");
        assert_eq!(p["index"], 149);
        assert_eq!(p["tree_size"], 200);
        tlog_tiles::check_record(&hashes(&p["proof"]), 200, old_root, 149, leaves[149]).expect("inclusion");
    }
    // Consistency between any two sizes, not only commitment boundaries.
    for (from, to) in [(1, 2), (7, 300), (255, 257), (256, 299), (299, 300), (300, 300)] {
        let (status, c) = api.get(&format!("{}/proof/consistency?from_size={from}&to_size={to}", prefix(&agent))).await;
        assert_eq!(status, 200, "{c}");
        let r = |k: &str| Hash(B64.decode(c[k].as_str().unwrap()).unwrap().try_into().unwrap());
        tlog_tiles::check_tree(&hashes(&c["proof"]), to, r("to_root"), from, r("from_root")).expect("consistency");
    }
    let (status, _) = api.get(&format!("{}/proof/consistency?from_size=5&to_size=301", prefix(&agent))).await;
    assert_eq!(status, 400);
    let (status, _) = api.get(&format!("{}/proof/inclusion?sequence_number=0", prefix(&agent))).await;
    assert_eq!(status, 400);
    let (status, _) =
        api.get(&format!("{}/proof/inclusion?leaf_hash={}", prefix(&agent), urlencode(&B64.encode([1u8; 32])))).await;
    assert_eq!(status, 404);

    // The tenant's read authorization applies: a key for another store sees nothing.
    let other = api.mint_key(agent.tenant_id, &[Uuid::new_v4()], &["read"]).await;
    let (status, _) = api.with_key(&other).get(&format!("{}/proof/inclusion?sequence_number=1", prefix(&agent))).await;
    assert_eq!(status, 403);
    let (status, _, _) = get_raw(&api.with_key(&other), &format!("{}/checkpoint", prefix(&agent))).await;
    assert_eq!(status, 403);

    // An offline bundle verifies with only the log key, in the admin CLI; a tampered one does not.
    let (status, _, bundle) = get_raw(&api, &format!("{}/bundle?event_id={event_id}", prefix(&agent))).await;
    assert_eq!(status, 200);
    let dir = std::env::temp_dir().join(format!("tlog-bundle-{}", Uuid::new_v4()));
    std::fs::write(&dir, &bundle).unwrap();
    let run = |path: &std::path::Path, key: &str| {
        Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
            .args(["verify-bundle", path.to_str().unwrap(), "--log-key", key, "--origin", cp.origin()])
            .output()
            .unwrap()
    };
    let out = run(&dir, &key);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sequence number 150"));
    let tampered = String::from_utf8(bundle.clone()).unwrap().replace("index 149", "index 148");
    std::fs::write(&dir, tampered).unwrap();
    assert!(!run(&dir, &key).status.success());
    std::fs::write(&dir, &bundle).unwrap();
    let stranger = sequencer::checkpoint::CheckpointSigner::new("stateset-sequencer", SigningKey::from_bytes(&[5; 32]));
    assert!(!run(&dir, stranger.verifier_key()).status.success());
    let _ = std::fs::remove_file(&dir);

    // The existing VES-commitment checkpoint is untouched: its own origin, its own root.
    let (status, _) = api
        .post(
            "/api/v1/ves/commitments",
            serde_json::json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": 1, "sequence_end": 300}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, _, ves_cp) =
        get_raw(&api, &format!("/api/v1/ves/checkpoint?tenant_id={}&store_id={}", agent.tenant_id, agent.store_id))
            .await;
    let ves_cp = Checkpoint::from_bytes(Note::from_bytes(&ves_cp).unwrap().text()).unwrap();
    assert_eq!(ves_cp.origin(), format!("stateset-sequencer/{}/{}", agent.tenant_id, agent.store_id));
    assert!(ves_cp.extension().starts_with("ves-commitment "));
}

#[tokio::test]
async fn reads_of_a_public_log_without_a_credential_are_limited_per_second_and_credentialed_reads_are_not() {
    let public = Agent::random();
    let listed = format!("{}/{}", public.tenant_id, public.store_id);
    let server =
        TestServer::start_with(&[("TLOG_PUBLIC_READ", listed.as_str()), ("TLOG_PUBLIC_READ_RATE_PER_SECOND", "1")])
            .await;
    let api = Api::admin(&server);
    api.register_key(&public).await;
    ingest_n(&api, &public, 3, 1).await;
    let path = format!("{}/checkpoint", prefix(&public));
    // An allowance of one per second: twenty reads sent back to back cannot all fall in new seconds.
    let anyone = reqwest::Client::new();
    let mut refused = 0;
    for _ in 0..20 {
        let resp = anyone.get(server.url(&path)).send().await.unwrap();
        match resp.status().as_u16() {
            200 | 404 => {}
            429 => {
                refused += 1;
                assert_eq!(resp.headers()["retry-after"], "1");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED", "{body}");
            }
            other => panic!("{other}: {}", resp.text().await.unwrap()),
        }
    }
    assert!(refused >= 1, "{refused} of 20 anonymous reads refused");
    // A reader with a credential is not locked out by the spent anonymous allowance: it is answered
    // as an authenticated reader (its tenant's limits apply, none here).
    for _ in 0..5 {
        let (status, _, body) = get_raw(&api, &path).await;
        assert!(status == 200 || status == 404, "{status}: {}", String::from_utf8_lossy(&body));
    }
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sequencer_ratelimit_rejected_total{scope=\"public_read\"} ") && !l.ends_with(" 0")),
        "the refusals are counted"
    );
}

#[tokio::test]
async fn a_stream_listed_for_public_read_is_verified_by_anyone_without_credentials_and_its_neighbours_stay_private() {
    let public = Agent::random();
    let neighbour = Agent { store_id: Uuid::new_v4(), ..public.clone() };
    let open_tenant = Uuid::new_v4();
    let listed = format!("{}/{}, {open_tenant}/*", public.tenant_id, public.store_id);
    let server =
        TestServer::start_with(&[("TLOG_INTEGRATE_INTERVAL_MS", "20"), ("TLOG_PUBLIC_READ", listed.as_str())]).await;
    let api = Api::admin(&server);
    api.register_key(&public).await;
    ingest_n(&api, &public, 260, 1).await;
    ingest_n(&api, &neighbour, 3, 1).await;
    // The verifier key comes out of band (here: from the operator of the log, who has a credential).
    let key = log_key(&api).await;
    checkpoint_at_least(&api, &public, 260, &key).await;
    checkpoint_at_least(&api, &neighbour, 3, &key).await;

    // Anyone: no Authorization header at all.
    let anyone = reqwest::Client::new();
    let get = |path: String| {
        let req = anyone.get(server.url(&path));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let cache = resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
            (status, cache.unwrap_or_default(), resp.bytes().await.unwrap().to_vec())
        }
    };
    let (status, cache, note) = get(format!("{}/checkpoint", prefix(&public))).await;
    assert_eq!(status, 200);
    assert_eq!(cache, "no-store", "the checkpoint moves on");
    let note = Note::from_bytes(&note).expect("a signed note");
    note.verify(&VerifierList::new(vec![Box::new(StandardVerifier::new(&key).unwrap())])).expect("the log signed it");
    let cp = Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!(cp.size(), 260);

    let mut fetched = HashMap::new();
    for t in Tile::new_tiles(8, 0, 260) {
        let (status, cache, body) = get(format!("{}/{}", prefix(&public), c2sp_path(&t))).await;
        assert_eq!(status, 200, "{}", c2sp_path(&t));
        assert_eq!(cache, "public, max-age=31536000, immutable", "{}: shared caches may keep it", c2sp_path(&t));
        fetched.insert((t.level(), t.level_index(), t.width()), body);
    }
    let tiles = HttpTiles(fetched);
    let reader = TileHashReader::new(260, *cp.hash(), &tiles);
    let indexes: Vec<u64> = (0..260).map(|i| tlog_tiles::stored_hash_index(0, i)).collect();
    let leaves = reader.read_hashes(&indexes).expect("tiles authenticate against the signed root");
    let mut entries = Vec::new();
    for path in ["tile/entries/000", "tile/entries/001.p/4"] {
        let (status, cache, body) = get(format!("{}/{path}", prefix(&public))).await;
        assert_eq!((status, cache.starts_with("public")), (200, true), "{path}");
        entries
            .extend(sequencer::tlog::bundle_entries(&body).expect("an entry bundle").into_iter().map(<[u8]>::to_vec));
    }
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(leaves[i], tlog_tiles::record_hash(entry), "leaf {i}");
        let envelope: ves::envelope::VesEventEnvelope = serde_json::from_slice(entry).unwrap();
        assert!(envelope.verify_signature(&public.key.verifying_key()), "signature of entry {i}");
    }
    let (status, _, bundle) = get(format!("{}/bundle?sequence_number=257", prefix(&public))).await;
    assert_eq!(status, 200);
    let v = sequencer::tlog::bundle::verify(&bundle, std::slice::from_ref(&key), &[], 0).expect("an offline proof");
    assert_eq!(v.index, 256);
    let (status, _, body) = get(format!("{}/proof/consistency?from_size=100", prefix(&public))).await;
    assert_eq!(status, 200);
    let c: Value = serde_json::from_slice(&body).unwrap();
    let old_root = Hash(B64.decode(c["from_root"].as_str().unwrap()).unwrap().try_into().unwrap());
    tlog_tiles::check_tree(&hashes(&c["proof"]), 260, *cp.hash(), 100, old_root).expect("consistency 100 -> 260");

    // A credential is not looked at: another tenant's key reads the same, a revoked or bogus one too.
    let stranger = api.mint_key(Uuid::new_v4(), &[], &["read"]).await;
    for auth in [format!("ApiKey {stranger}"), "ApiKey ss_not_a_key".to_owned()] {
        let resp = anyone.get(server.url(&format!("{}/tile/0/000", prefix(&public)))).header("authorization", auth);
        assert_eq!(resp.send().await.unwrap().status(), 200);
    }

    // The stream's other routes, and every route of the tenant's other store, still need a credential.
    let (t, s, n) = (public.tenant_id, public.store_id, neighbour.store_id);
    for path in [
        format!("/api/v1/ves/events?tenant_id={t}&store_id={s}"),
        format!("/api/v1/ves/head?tenant_id={t}&store_id={s}"),
        format!("/api/v1/ves/checkpoint?tenant_id={t}&store_id={s}"),
        format!("{}/checkpoint", prefix(&neighbour)),
        format!("{}/tile/0/000.p/3", prefix(&neighbour)),
        format!("{}/tile/entries/000.p/3", prefix(&neighbour)),
        format!("{}/bundle?sequence_number=1", prefix(&neighbour)),
        format!("{}/proof/inclusion?sequence_number=1", prefix(&neighbour)),
        format!("/api/v1/ves/tlog/{n}/{s}/checkpoint"),
    ] {
        assert_eq!(get(path.clone()).await.0, 401, "{path}");
    }
    // With a credential, the neighbour's tiles stay `private`.
    let (status, headers, _) = get_raw(&api, &format!("{}/tile/0/000.p/3", prefix(&neighbour))).await;
    assert_eq!((status, headers["cache-control"].as_str()), (200, "private, max-age=31536000, immutable"));

    // `<tenant>/*` lists every store of a tenant, even one with no log yet.
    let (status, _, body) = get(format!("/api/v1/ves/tlog/{open_tenant}/{}/checkpoint", Uuid::new_v4())).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())).collect()
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

// ---------------------------------------------------------------------------------------------
// A witness written from C2SP tlog-witness and tlog-cosignature (cosignature/v1, Ed25519).

struct Witness {
    name: String,
    key: SigningKey,
    /// The log's verifier key and the origins it may sign.
    log_key: String,
    origins: Vec<String>,
    /// origin -> (size, root) of the latest cosigned checkpoint.
    state: Mutex<HashMap<String, (u64, Hash)>>,
}

impl Witness {
    fn vkey(&self) -> String {
        let mut pk = vec![0x04];
        pk.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, key_id(&self.name, &pk), B64.encode(&pk))
    }

    fn cosign(&self, note_text: &[u8]) -> String {
        let mut pk = vec![0x04];
        pk.extend_from_slice(self.key.verifying_key().as_bytes());
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
        msg.extend_from_slice(note_text);
        let mut blob = key_id(&self.name, &pk).to_be_bytes().to_vec();
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(&self.key.sign(&msg).to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// `POST /add-checkpoint`, as the specification orders the checks.
    fn add_checkpoint(&self, body: &[u8]) -> (u16, Option<&'static str>, String) {
        let Ok(text) = std::str::from_utf8(body) else { return (400, None, String::new()) };
        let Some((head, note)) = text.split_once("\n\n") else { return (400, None, String::new()) };
        let mut lines = head.split('\n');
        let Some(old) = lines.next().and_then(|l| l.strip_prefix("old ")).and_then(|n| n.parse::<u64>().ok()) else {
            return (400, None, String::new());
        };
        let proof: Option<Vec<Hash>> =
            lines.map(|l| B64.decode(l).ok().and_then(|b| b.try_into().ok()).map(Hash)).collect();
        let Some(proof) = proof else { return (400, None, String::new()) };
        let Ok(note) = Note::from_bytes(note.as_bytes()) else { return (400, None, String::new()) };
        let Ok(cp) = Checkpoint::from_bytes(note.text()) else { return (400, None, String::new()) };
        if !self.origins.iter().any(|o| o == cp.origin()) {
            return (404, None, String::new());
        }
        let verifier = StandardVerifier::new(&self.log_key).unwrap();
        if note.verify(&VerifierList::new(vec![Box::new(verifier)])).is_err() {
            return (403, None, String::new());
        }
        if old > cp.size() {
            return (400, None, String::new());
        }
        let mut state = self.state.lock().unwrap();
        let (size, root) = state.get(cp.origin()).copied().unwrap_or((0, tlog_tiles::EMPTY_HASH));
        if old != size {
            return (409, Some("text/x.tlog.size"), format!("{size}\n"));
        }
        if old == cp.size() {
            if *cp.hash() != root {
                return (409, None, String::new());
            }
        } else if old == 0 {
            if !proof.is_empty() {
                return (422, None, String::new());
            }
        } else if tlog_tiles::check_tree(&proof, cp.size(), *cp.hash(), old, root).is_err() {
            return (422, None, String::new());
        }
        state.insert(cp.origin().to_owned(), (cp.size(), *cp.hash()));
        (200, None, self.cosign(note.text()))
    }
}

fn key_id(name: &str, key: &[u8]) -> u32 {
    let h = Sha256::new().chain_update(name).chain_update("\n").chain_update(key).finalize();
    u32::from_be_bytes(h[..4].try_into().unwrap())
}

/// Serves a witness on 127.0.0.1:0; returns its URL prefix.
async fn serve_witness(w: Arc<Witness>) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/add-checkpoint",
        axum::routing::post(move |body: axum::body::Bytes| {
            let w = w.clone();
            async move {
                let (status, ct, text) = w.add_checkpoint(&body);
                let mut resp = (axum::http::StatusCode::from_u16(status).unwrap(), text).into_response();
                if let Some(ct) = ct {
                    resp.headers_mut().insert("content-type", ct.parse().unwrap());
                }
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The witness's cosignature on a served checkpoint, checked with the witness's own key material.
fn cosigned_by(note: &[u8], w: &Witness) -> bool {
    let Ok(parsed) = Note::from_bytes(note) else { return false };
    let text = parsed.text();
    let mut pk = vec![0x04];
    pk.extend_from_slice(w.key.verifying_key().as_bytes());
    let id = key_id(&w.name, &pk);
    String::from_utf8_lossy(note).lines().any(|line| {
        let Some(rest) = line.strip_prefix(&format!("\u{2014} {} ", w.name)) else { return false };
        let Ok(blob) = B64.decode(rest) else { return false };
        if blob.len() != 4 + 8 + 64 || blob[..4] != id.to_be_bytes() {
            return false;
        }
        let time = u64::from_be_bytes(blob[4..12].try_into().unwrap());
        let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
        msg.extend_from_slice(text);
        let sig = ed25519_dalek::Signature::from_bytes(blob[12..].try_into().unwrap());
        w.key.verifying_key().verify_strict(&msg, &sig).is_ok()
    })
}

#[tokio::test]
async fn witnesses_cosign_each_new_checkpoint_and_one_that_saw_a_fork_refuses_without_blocking_ingest() {
    let agent = Agent::random();
    let log_signer =
        sequencer::checkpoint::CheckpointSigner::new("stateset-sequencer", SigningKey::from_bytes(&hex_seed()));
    let origin = format!("stateset-sequencer/tlog/{}/{}", agent.tenant_id, agent.store_id);
    let witness = |name: &str, seed: u8| {
        Arc::new(Witness {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&[seed; 32]),
            log_key: log_signer.verifier_key().to_owned(),
            origins: vec![origin.clone()],
            state: Mutex::new(HashMap::new()),
        })
    };
    let honest = witness("honest.example/w", 11);
    // This witness was shown another history: a tree of 2 entries with a different root.
    let forked = witness("forked.example/w", 12);
    forked.state.lock().unwrap().insert(origin.clone(), (2, Hash([0xAB; 32])));
    let down = witness("down.example/w", 13);
    let honest_url = serve_witness(honest.clone()).await;
    let forked_url = serve_witness(forked.clone()).await;
    let down_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let witnesses = serde_json::json!([
        {"url": honest_url, "key": honest.vkey()},
        {"url": forked_url, "key": forked.vkey()},
        {"url": down_url, "key": down.vkey()},
    ])
    .to_string();
    let server = TestServer::start_with(&[
        ("TLOG_INTEGRATE_INTERVAL_MS", "20"),
        ("TLOG_WITNESS_INTERVAL_MS", "50"),
        ("TLOG_WITNESS_TIMEOUT_MS", "2000"),
        ("TLOG_WITNESSES", witnesses.as_str()),
    ])
    .await;
    let api = Api::admin(&server);
    api.register_key(&agent).await;
    let key = log_key(&api).await;
    assert_eq!(key, log_signer.verifier_key());

    // Ingest goes on while witnesses refuse or are down; each new checkpoint gets cosigned.
    let mut sent = 0;
    for round in 0..3u64 {
        let n = 10 + round * 7;
        ingest_n(&api, &agent, n, sent + 1).await;
        sent += n;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (cp, note) = checkpoint_at_least(&api, &agent, sent, &key).await;
            if cp.size() == sent && cosigned_by(&note, &honest) {
                break;
            }
            assert!(Instant::now() < deadline, "no cosignature of size {sent}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            honest.state.lock().unwrap()[&origin].0,
            sent,
            "the honest witness followed with consistency proofs"
        );
    }
    // The forked witness never moved and never cosigned; the down one is reported unreachable.
    assert_eq!(forked.state.lock().unwrap()[&origin], (2, Hash([0xAB; 32])));
    let (_, note) = checkpoint_at_least(&api, &agent, sent, &key).await;
    assert!(!cosigned_by(&note, &forked));
    let (status, report) = api.get("/api/v1/admin/tlog/witnesses").await;
    assert_eq!(status, 200, "{report}");
    let row = |name: &str| {
        report["streams"].as_array().unwrap().iter().find(|r| r["witness"] == name).cloned().unwrap_or(Value::Null)
    };
    assert!(row("forked.example/w")["lastError"].as_str().unwrap_or("").contains("422"), "{report}");
    assert_eq!(row("forked.example/w")["cosignedSize"], 2, "{report}");
    assert!(row("down.example/w")["lastError"].as_str().unwrap_or("").contains("unreachable"), "{report}");
    assert_eq!(row("honest.example/w")["healthy"], true, "{report}");
    assert_eq!(row("honest.example/w")["cosignedSize"], sent, "{report}");
    let (_, status) = api.get("/api/v1/admin/status").await;
    let health: HashMap<String, bool> = status["transparencyLog"]["witnesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_owned(), w["healthy"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        health,
        HashMap::from([
            ("honest.example/w".to_owned(), true),
            ("forked.example/w".to_owned(), false),
            ("down.example/w".to_owned(), false)
        ]),
        "{status}"
    );
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequencer_tlog_witness_failures_total{witness=\"forked.example/w\"}"), "{metrics}");
    assert!(metrics.contains("sequencer_tlog_witness_up{witness=\"down.example/w\"} 0"), "{metrics}");
    assert!(metrics.contains("sequencer_tlog_witness_up{witness=\"honest.example/w\"} 1"), "{metrics}");

    // A bundle carries the honest cosignature and verifies offline requiring one witness.
    let (status, _, bundle) = get_raw(&api, &format!("{}/bundle?sequence_number=3", prefix(&agent))).await;
    assert_eq!(status, 200);
    let v = sequencer::tlog::bundle::verify(&bundle, std::slice::from_ref(&key), &[honest.vkey()], 1).expect("bundle");
    assert_eq!(v.witnesses, vec!["honest.example/w".to_owned()]);
    assert!(sequencer::tlog::bundle::verify(&bundle, &[key], &[forked.vkey()], 1).is_err());
}

fn hex_seed() -> [u8; 32] {
    hex::decode(SEQUENCER_SEED_HEX).unwrap().try_into().unwrap()
}

/// RFC 6962 §2.1 Merkle tree hash, from scratch (no tiles, no `tlog_tiles`).
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(mth(&leaves[..k]));
            h.update(mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// The leaf hash of each stored event's entry, computed here from the event as read back and served
/// (`event_json`, a `Value`), not by the integrator's own encoding.
async fn served_leaves(store: &sequencer::store::Store, agent: &Agent, n: i64) -> Vec<[u8; 32]> {
    let stream = agent.stream();
    let events = store.read_range(stream, 1, n, n).await.unwrap();
    events
        .iter()
        .map(|e| {
            let entry = sequencer::tlog::entry_bytes(&sequencer::store::events::event_json(e).unwrap()).unwrap();
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&entry);
            h.finalize().into()
        })
        .collect()
}

/// The stream's leaf runs: `(first, last, transparency log leaves)`.
async fn tlog_runs(pool: &sqlx::PgPool, agent: &Agent) -> Vec<(i64, i64, Option<Vec<u8>>)> {
    sqlx::query_as(
        "SELECT first_sequence, last_sequence, tlog_leaves FROM event_leaf_runs \
         WHERE tenant_id = $1 AND store_id = $2 ORDER BY first_sequence",
    )
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A server whose own integrator never runs: the returned connection holds the integrator's
/// leadership lock (drop it to release), so the rounds a test drives itself are the only ones.
async fn start_holding_the_integrators_lock() -> (TestServer, sqlx::PgConnection) {
    let db = TestDb::migrated().await;
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(sequencer::worker::tlog::TLOG_LOCK_KEY)
        .fetch_one(&mut lock)
        .await
        .unwrap();
    assert!(locked);
    (TestServer::start_on(db, &[]).await, lock)
}

/// Drives integration round by round over `N` ingested events (the server's own integrator does not
/// run), in rounds that start and end inside a tile, on a tile boundary, and span several tiles; the
/// edge cache is dropped halfway so that the edge tiles are also read back. Every round's root is the
/// reference root of its size; a stale size writes nothing; the stored tiles authenticate.
async fn integrate_in_rounds(server: &TestServer, agent: &Agent, leaves: &[[u8; 32]]) {
    use sequencer::worker::tlog::{EdgeCache, integrate_stream};
    let n_all = leaves.len() as i64;
    let api = Api::admin(server);
    let state = &server.state;
    let store = &state.store;
    let signer = state.checkpoints.as_ref().expect("checkpoint signer");
    let stream = agent.stream();
    let mut edges = EdgeCache::default();
    let mut size = 0i64;
    let mut steps = [1i64, 254, 1, 300, 2, 255, 1, 186].into_iter().chain(std::iter::repeat(500));
    for round in 0.. {
        if size == n_all {
            break;
        }
        assert!(round < 100, "integration does not progress at size {size}");
        if round == 4 {
            edges = EdgeCache::default();
        }
        let step = steps.next().unwrap();
        let n = integrate_stream(store, signer, None, &edges, stream, (n_all, size), step).await.unwrap() as i64;
        // NB: a round may end early at the edge of a run whose leaves the sequencer did not know.
        assert!(n >= 1 && n <= step.min(n_all - size), "round {round} integrated {n} of {step}");
        size += n;
        let head = store.tlog_head(stream).await.unwrap().unwrap();
        assert_eq!(head.size, size);
        assert_eq!(head.root, mth(&leaves[..size as usize]), "root after round {round} at size {size}");
    }

    // A stale size (an integrator that lost a race) changes nothing.
    assert_eq!(integrate_stream(store, signer, None, &edges, stream, (n_all, n_all - 100), 50).await.unwrap(), 0);
    let head = store.tlog_head(stream).await.unwrap().unwrap();
    assert_eq!((head.size, head.root), (n_all, mth(leaves).to_vec()));

    // Every stored tile is what a tree of N entries has, checked by tlog_tiles against the root.
    let mut fetched = HashMap::new();
    for t in Tile::new_tiles(8, 0, n_all as u64) {
        let (status, _, body) = get_raw(&api, &format!("{}/{}", prefix(agent), c2sp_path(&t))).await;
        assert_eq!(status, 200, "{}", c2sp_path(&t));
        fetched.insert((t.level(), t.level_index(), t.width()), body);
    }
    let tiles = HttpTiles(fetched);
    let reader = TileHashReader::new(n_all as u64, Hash(mth(leaves)), &tiles);
    let indexes: Vec<u64> = (0..n_all as u64).map(|i| tlog_tiles::stored_hash_index(0, i)).collect();
    let read = reader.read_hashes(&indexes).expect("tiles authenticate against the root");
    assert_eq!(read.iter().map(|h| h.0).collect::<Vec<_>>(), leaves);
}

#[tokio::test]
async fn the_integrator_appends_in_rounds_of_any_size_with_or_without_its_edge_cache_and_a_stale_size_writes_nothing() {
    // The log is off, so the runs carry no log leaves: every round reads its events back.
    let server = TestServer::start_with(&[("TLOG_ENABLED", "false")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    const N: u64 = 800;
    for batch in 0..N / 100 {
        ingest_n(&api, &agent, 100, batch * 100 + 1).await;
    }
    assert!(tlog_runs(server.state.store.pool(), &agent).await.iter().all(|r| r.2.is_none()));
    let leaves = served_leaves(&server.state.store, &agent, N as i64).await;
    integrate_in_rounds(&server, &agent, &leaves).await;
}

#[tokio::test]
async fn the_integrator_takes_the_leaves_the_sequencer_wrote_with_each_run_and_reads_back_only_runs_without_them() {
    // The log is on, but this test holds the integrator's leadership lock, so the server's own
    // integrator never runs and the rounds below are the only ones.
    let (server, lock) = start_holding_the_integrators_lock().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    // Eight requests of 100 events; the fifth holds a float that jsonb prints in another notation,
    // so the sequencer cannot know its entry's bytes before storing it, and writes no log leaves for
    // that run.
    const N: u64 = 800;
    for batch in 0..N / 100 {
        let events: Vec<_> = (batch * 100 + 1..=batch * 100 + 100)
            .map(|i| match (batch, i % 100) {
                (4, 50) => agent.builder().payload(serde_json::json!({"delta": i, "ratio": 1e300})).sign(&agent.key),
                _ => agent.event(i),
            })
            .collect();
        let (status, body) = api.ingest(agent.agent_id, &events).await;
        assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(100)), "{body}");
    }
    let leaves = served_leaves(&server.state.store, &agent, N as i64).await;
    let runs = tlog_runs(server.state.store.pool(), &agent).await;
    assert_eq!(runs.iter().map(|r| r.1 - r.0 + 1).sum::<i64>(), N as i64);
    let unknown: Vec<_> = runs.iter().filter(|r| r.2.is_none()).map(|r| (r.0, r.1)).collect();
    assert!(unknown.iter().any(|&(a, b)| a <= 450 && 450 <= b), "{unknown:?}");
    assert!(unknown.iter().all(|&(a, b)| a > 400 && b <= 500), "only the float's run is unknown: {unknown:?}");
    // Every leaf the sequencer wrote is the leaf of the entry as served.
    for (first, _, known) in &runs {
        if let Some(known) = known {
            for (i, leaf) in known.chunks_exact(32).enumerate() {
                assert_eq!(leaf, leaves[*first as usize - 1 + i], "log leaf of event {}", first + i as i64);
            }
        }
    }
    integrate_in_rounds(&server, &agent, &leaves).await;
    drop(lock);
}

#[tokio::test]
async fn one_integration_batch_appends_every_streams_events_and_leaves_a_stream_whose_tree_moved_alone() {
    use sequencer::worker::tlog::{EdgeCache, integrate_streams};
    // As above: the test holds the integrator's lock and drives the batches itself.
    let (server, lock) = start_holding_the_integrators_lock().await;
    let api = Api::admin(&server);
    let store = &server.state.store;
    let signer = server.state.checkpoints.as_ref().expect("checkpoint signer");
    let edges = EdgeCache::default();
    // Streams of 1 to 400 events, in requests of at most 100: runs that end inside, on and across
    // tile boundaries.
    let counts = [1u64, 100, 256, 257, 400];
    let agents: Vec<Agent> = counts.iter().map(|_| Agent::random()).collect();
    for (agent, &n) in agents.iter().zip(&counts) {
        api.register_key(agent).await;
        for from in (1..=n).step_by(100) {
            ingest_n(&api, agent, (n - from + 1).min(100), from).await;
        }
    }
    let all: Vec<_> = agents.iter().zip(&counts).map(|(a, &n)| (a.stream(), n as i64, 0)).collect();
    let results = integrate_streams(store, signer, None, &edges, &all, 300).await.unwrap();
    let integrated: HashMap<_, _> = results.into_iter().map(|(s, r)| (s, r.unwrap())).collect();
    for (agent, &n) in agents.iter().zip(&counts) {
        let leaves = served_leaves(store, agent, n as i64).await;
        let expect = n.min(300);
        assert_eq!(integrated[&agent.stream()], expect, "stream of {n}");
        let head = store.tlog_head(agent.stream()).await.unwrap().unwrap();
        assert_eq!((head.size, head.root), (expect as i64, mth(&leaves[..expect as usize]).to_vec()), "stream of {n}");
    }

    // More events everywhere; the second stream's tree is given a stale size (another integrator
    // moved it): it is left as it is and every other stream moves on.
    for (agent, &n) in agents.iter().zip(&counts) {
        ingest_n(&api, agent, 10, n + 1).await;
    }
    let all: Vec<_> = agents
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (a, &n))| (a.stream(), n as i64 + 10, if i == 1 { 7 } else { n.min(300) as i64 }))
        .collect();
    let results = integrate_streams(store, signer, None, &edges, &all, 1_000).await.unwrap();
    let integrated: HashMap<_, _> = results.into_iter().map(|(s, r)| (s, r.unwrap())).collect();
    for (i, (agent, &n)) in agents.iter().zip(&counts).enumerate() {
        let total = n as i64 + 10;
        let leaves = served_leaves(store, agent, total).await;
        let head = store.tlog_head(agent.stream()).await.unwrap().unwrap();
        if i == 1 {
            assert_eq!(integrated[&agent.stream()], 0);
            assert_eq!((head.size, head.root), (100, mth(&leaves[..100]).to_vec()));
        } else {
            assert_eq!(integrated[&agent.stream()], (total - n.min(300) as i64) as u64, "stream of {n}");
            assert_eq!((head.size, head.root), (total, mth(&leaves).to_vec()), "stream of {n}");
        }
    }
    drop(lock);
}

#[tokio::test]
async fn a_stream_whose_log_write_the_database_refuses_holds_back_no_other_stream_of_its_batch() {
    use sequencer::worker::tlog::{EdgeCache, integrate_streams};
    // As above: the test holds the integrator's lock and drives the batches itself.
    let (server, lock) = start_holding_the_integrators_lock().await;
    let api = Api::admin(&server);
    let store = &server.state.store;
    let signer = server.state.checkpoints.as_ref().expect("checkpoint signer");
    let edges = EdgeCache::default();
    let agents: Vec<Agent> = (0..3).map(|_| Agent::random()).collect();
    for agent in &agents {
        api.register_key(agent).await;
        ingest_n(&api, agent, 30, 1).await;
    }
    // The database refuses any write of the middle stream's tree, so the batch's one statement fails.
    let refused = agents[1].stream();
    sqlx::query(
        "CREATE FUNCTION refuse_one_tree() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let trigger = format!(
        "CREATE TRIGGER refuse_one_tree BEFORE INSERT OR UPDATE ON tlog_trees FOR EACH ROW \
         WHEN (NEW.store_id = '{}') EXECUTE FUNCTION refuse_one_tree()",
        refused.store_id
    );
    sqlx::query(sqlx::AssertSqlSafe(trigger)).execute(store.pool()).await.unwrap();

    let all: Vec<_> = agents.iter().map(|a| (a.stream(), 30, 0)).collect();
    let results: HashMap<_, _> =
        integrate_streams(store, signer, None, &edges, &all, 1_000).await.unwrap().into_iter().collect();
    assert_eq!(results.len(), 3);
    for agent in &agents {
        let head = store.tlog_head(agent.stream()).await.unwrap();
        if agent.stream() == refused {
            let error = results[&refused].as_ref().expect_err("its write was refused").to_string();
            assert!(error.contains("refused by the test"), "{error}");
            assert!(head.is_none(), "nothing of the refused stream's log was written");
        } else {
            assert_eq!(results[&agent.stream()].as_ref().ok(), Some(&30), "{results:?}");
            let leaves = served_leaves(store, agent, 30).await;
            let head = head.expect("the other streams' logs were written stream by stream");
            assert_eq!((head.size, head.root), (30, mth(&leaves).to_vec()));
        }
    }

    // Once the database takes the write again, the stream catches up where it stood.
    sqlx::query("DROP TRIGGER refuse_one_tree ON tlog_trees").execute(store.pool()).await.unwrap();
    let all: Vec<_> = agents.iter().map(|a| (a.stream(), 30, if a.stream() == refused { 0 } else { 30 })).collect();
    let results: HashMap<_, _> =
        integrate_streams(store, signer, None, &edges, &all, 1_000).await.unwrap().into_iter().collect();
    assert_eq!(results[&refused].as_ref().ok(), Some(&30), "{results:?}");
    let head = store.tlog_head(refused).await.unwrap().unwrap();
    assert_eq!((head.size, head.root), (30, mth(&served_leaves(store, &agents[1], 30).await).to_vec()));
    drop(lock);
}

#[tokio::test]
async fn an_incremental_scan_lists_only_streams_written_since_and_a_full_scan_lists_every_stream_behind() {
    // The test holds the integrator's lock, so nothing integrates behind its back.
    let (server, lock) = start_holding_the_integrators_lock().await;
    let api = Api::admin(&server);
    let store = &server.state.store;
    let (recent, quiet, done) = (Agent::random(), Agent::random(), Agent::random());
    for a in [&recent, &quiet, &done] {
        api.register_key(a).await;
        ingest_n(&api, a, 3, 1).await;
    }
    // `done` is integrated; `quiet` was last written an hour ago.
    let signer = server.state.checkpoints.as_ref().unwrap();
    let edges = sequencer::worker::tlog::EdgeCache::default();
    sequencer::worker::tlog::integrate_stream(store, signer, None, &edges, done.stream(), (3, 0), 100).await.unwrap();
    sqlx::query(
        "UPDATE sequence_counters SET updated_at = NOW() - INTERVAL '1 hour' WHERE tenant_id = $1 AND store_id = $2",
    )
    .bind(quiet.tenant_id)
    .bind(quiet.store_id)
    .execute(store.pool())
    .await
    .unwrap();
    let listed = |v: Vec<(sequencer::store::events::StreamKey, i64, i64)>| {
        let mut v: Vec<_> = v.into_iter().map(|(s, head, size)| (s.tenant_id, head, size)).collect();
        v.sort();
        v
    };
    let since = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    assert_eq!(listed(store.tlog_streams_behind(Some(since), 100).await.unwrap()), vec![(recent.tenant_id, 3, 0)]);
    let mut every = vec![(recent.tenant_id, 3, 0), (quiet.tenant_id, 3, 0)];
    every.sort();
    assert_eq!(listed(store.tlog_streams_behind(None, 100).await.unwrap()), every);
    // `done` appears again once written, with its tree's size.
    ingest_n(&api, &done, 2, 4).await;
    let recent_ones = listed(store.tlog_streams_behind(Some(since), 100).await.unwrap());
    assert!(recent_ones.contains(&(done.tenant_id, 5, 3)), "{recent_ones:?}");
    drop(lock);
}

/// A JSON value drawn from `rng`: nested objects and arrays, strings with escapes and non-ASCII
/// characters, integers across i64 and u64, and floats of every magnitude (some of which serde_json
/// prints in exponent notation or as `-0.0`).
fn random_json(rng: &mut impl rand::Rng, depth: u32) -> Value {
    const CHARS: &[char] =
        &['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u{1}', '\u{1f}', 'é', 'ß', '€', '😀', '\u{2028}'];
    let string = |rng: &mut dyn rand::RngCore| -> String {
        let n = rand::Rng::gen_range(rng, 0..8);
        (0..n).map(|_| CHARS[rand::Rng::gen_range(rng, 0..CHARS.len())]).collect()
    };
    match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.r#gen()),
        2 => Value::String(string(rng)),
        3 => serde_json::json!(rng.r#gen::<i64>() >> rng.gen_range(0u32..64)),
        4 => serde_json::json!(rng.r#gen::<u64>()),
        5 => {
            let mantissa: f64 = rng.gen_range(-1000.0..1000.0);
            let f = match rng.gen_range(0..4) {
                0 => -0.0,
                1 => (mantissa * 100.0).round() / 100.0,
                _ => mantissa * 10f64.powi(rng.gen_range(-12..22)),
            };
            serde_json::json!(f)
        }
        6 => Value::Array((0..rng.gen_range(0..4)).map(|_| random_json(rng, depth - 1)).collect()),
        _ => Value::Object((0..rng.gen_range(0..4)).map(|_| (string(rng), random_json(rng, depth - 1))).collect()),
    }
}

#[tokio::test]
async fn a_log_leaf_written_at_sequencing_is_the_leaf_of_the_entry_served_for_any_payload() {
    let server = TestServer::start_with(&[("TLOG_INTEGRATE_INTERVAL_MS", "20")]).await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    // One event per request, so one run per event: its log leaves are present exactly when the
    // sequencer judged the payload's stored form predictable.
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7106);
    const N: usize = 300;
    let mut payloads = Vec::new();
    for i in 0..N {
        let payload = serde_json::json!({"n": i, "v": random_json(&mut rng, 3)});
        let event = agent.builder().payload(payload.clone()).sign(&agent.key);
        let (status, body) = api.ingest(agent.agent_id, &[event]).await;
        assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(1)), "{payload} {body}");
        payloads.push(payload);
    }
    let leaves = served_leaves(&server.state.store, &agent, N as i64).await;
    let runs = tlog_runs(server.state.store.pool(), &agent).await;
    assert_eq!(runs.len(), N);
    let mut known = 0;
    for (first, last, tlog) in &runs {
        assert_eq!(first, last);
        let payload = &payloads[*first as usize - 1];
        match tlog {
            Some(leaf) => {
                known += 1;
                assert_eq!(leaf[..], leaves[*first as usize - 1], "event {first}, payload {payload}");
            }
            None => assert!(
                !sequencer::store::events::survives_jsonb(payload),
                "event {first}: no log leaf for a predictable payload {payload}"
            ),
        }
    }
    assert!(known > N / 2 && known < N, "{known} of {N} runs carry log leaves: the draw covers both cases");

    // A batch: one run whose entries share the group's time and its encoding buffer, payloads of
    // different sizes so that a longer entry's bytes left in the buffer would show in a shorter one's.
    const B: usize = 20;
    let batch: Vec<_> = (0..B)
        .map(|i| {
            let payload = serde_json::json!({"i": i, "pad": "x".repeat((B - i) * 37), "list": [i, "y"]});
            agent.builder().payload(payload).sign(&agent.key)
        })
        .collect();
    let (status, body) = api.ingest(agent.agent_id, &batch).await;
    assert_eq!((status, body["eventsAccepted"].as_u64()), (200, Some(B as u64)), "{body}");
    let total = (N + B) as i64;
    let leaves = served_leaves(&server.state.store, &agent, total).await;
    let runs = tlog_runs(server.state.store.pool(), &agent).await;
    let (first, last, tlog) = runs.last().unwrap();
    assert_eq!((*first, *last), (N as i64 + 1, total));
    let written: Vec<u8> = tlog.clone().expect("a batch of predictable payloads carries its log leaves");
    assert_eq!(written, leaves[N..].concat(), "the batch's log leaves are its served entries' leaves");

    // The integrator (the server's own) builds the tree of exactly these leaves, the unknown ones
    // read back.
    let key = log_key(&api).await;
    let (cp, _) = checkpoint_at_least(&api, &agent, total as u64, &key).await;
    assert_eq!((cp.size(), cp.hash().0), (total as u64, mth(&leaves)));
}
