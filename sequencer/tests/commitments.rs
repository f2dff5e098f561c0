//! Commitments, chaining, correction without deletion, and inclusion proofs over HTTP.

mod common;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;
use ves::envelope::VesEventEnvelope;

async fn golden_server() -> (TestServer, Api, Agent) {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::golden();
    api.register_key(&agent).await;
    let events: Vec<VesEventEnvelope> = golden()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e["envelope"].clone()).unwrap())
        .collect();
    let (_, body) = api.ingest(agent.agent_id, &events).await;
    assert_eq!(body["eventsAccepted"], 2);
    (server, api, agent)
}

async fn commit(api: &Api, agent: &Agent, start: i64, end: i64) -> (u16, Value) {
    api.post(
        "/api/v1/ves/commitments",
        json!({"tenant_id": agent.tenant_id, "store_id": agent.store_id, "sequence_start": start, "sequence_end": end}),
    )
    .await
}

#[tokio::test]
async fn commitments_over_the_golden_events_have_the_golden_roots() {
    let g = golden();
    let (_server, api, agent) = golden_server().await;
    let (status, both) = commit(&api, &agent, 1, 2).await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["merkle_root"], g["state_roots"][1]["merkle_root"]);
    assert_eq!(both["new_state_root"], g["state_roots"][1]["new_state_root"]);
    assert_eq!(both["prev_state_root"], g["state_roots"][1]["prev_state_root"]);
    assert_eq!(both["leaf_count"], 2);
    assert_eq!(both["tree_depth"], 1);
    assert_eq!(both["padded_leaf_count"], 2);

    let (_server, api, agent) = golden_server().await;
    let (_, first) = commit(&api, &agent, 1, 1).await;
    assert_eq!(first["merkle_root"], g["state_roots"][0]["merkle_root"]);
    assert_eq!(first["new_state_root"], g["state_roots"][0]["new_state_root"]);
    // The next commitment chains to it.
    let (status, second) = commit(&api, &agent, 2, 2).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["prev_state_root"], first["new_state_root"]);
    assert_eq!(second["merkle_root"], g["events"][1]["leaf_hash"]);
    // The same request again answers the same commitment.
    let (_, again) = commit(&api, &agent, 2, 2).await;
    assert_eq!(again["batch_id"], second["batch_id"]);
}

#[tokio::test]
async fn a_range_that_is_not_contiguous_fails_with_a_clear_4xx() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (0..6).map(|i| agent.event(i)).collect();
    api.ingest(agent.agent_id, &events).await;
    let (status, body) = commit(&api, &agent, 1, 9).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("non-contiguous sequence"), "{body}");
    let (status, _) = commit(&api, &agent, 1, 3).await;
    assert_eq!(status, 200);
    let (status, body) = commit(&api, &agent, 5, 6).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("non-contiguous sequence") && message.contains("must start at 4"), "{message}");
    let (status, body) = commit(&api, &agent, 3, 2).await;
    assert_eq!(status, 400, "{body}");
    // A real gap (a row removed behind the sequencer's back) is found, not committed over.
    tamper(server.state.store.pool(), &delete_event_sql(&agent, 5)).await;
    let (status, body) = commit(&api, &agent, 4, 6).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("non-contiguous sequence"), "{body}");
}

#[tokio::test]
async fn every_event_of_a_commitment_has_a_proof_that_verifies() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<_> = (0..11).map(|i| agent.event(i)).collect();
    api.ingest(agent.agent_id, &events).await;
    let (_, first) = commit(&api, &agent, 1, 4).await;
    let (_, second) = commit(&api, &agent, 5, 11).await;
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    for seq in 1..=11 {
        let (status, proof) = api.get(&format!("/api/v1/ves/proofs/{seq}?{q}")).await;
        assert_eq!(status, 200, "{proof}");
        let c = if seq <= 4 { &first } else { &second };
        assert_eq!(proof["batch_id"], c["batch_id"]);
        assert_eq!(proof["merkle_root"], c["merkle_root"]);
        let path: Vec<String> = serde_json::from_value(proof["proof_path"].clone()).unwrap();
        assert_eq!(path.len() as u64, c["tree_depth"].as_u64().unwrap());
        let (_, verdict) = api
            .post(
                "/api/v1/ves/proofs/verify",
                json!({"leaf_hash": proof["leaf_hash"], "merkle_root": proof["merkle_root"],
                       "proof_path": path, "leaf_index": proof["leaf_index"]}),
            )
            .await;
        assert_eq!(verdict["valid"], true, "seq {seq}: {proof}");
        // The leaf is the event's leaf as ves-wire §2.6 defines it.
        let e = &events[seq as usize - 1];
        let leaf = ves::hash::leaf_hash(e.tenant_id, e.store_id, seq, &e.signing_hash(), &e.agent_signature.0);
        assert_eq!(proof["leaf_hash"], hex::encode(leaf));
        // With an explicit batch_id too.
        let (_, explicit) =
            api.get(&format!("/api/v1/ves/proofs/{seq}?{q}&batch_id={}", c["batch_id"].as_str().unwrap())).await;
        assert_eq!(explicit, proof);
    }
    // A tampered proof does not verify.
    let (_, proof) = api.get(&format!("/api/v1/ves/proofs/6?{q}")).await;
    let mut path: Vec<String> = serde_json::from_value(proof["proof_path"].clone()).unwrap();
    let flipped = if path[0].starts_with('0') { "1" } else { "0" };
    path[0].replace_range(0..1, flipped);
    let (_, verdict) = api
        .post(
            "/api/v1/ves/proofs/verify",
            json!({"leaf_hash": proof["leaf_hash"], "merkle_root": proof["merkle_root"], "proof_path": path, "leaf_index": 1}),
        )
        .await;
    assert_eq!(verdict["valid"], false);
    // Nothing covers a number past the last commitment.
    api.ingest(agent.agent_id, &[agent.event(99)]).await;
    let (status, body) = api.get(&format!("/api/v1/ves/proofs/12?{q}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) =
        api.get(&format!("/api/v1/ves/proofs/12?{q}&batch_id={}", first["batch_id"].as_str().unwrap())).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_bad_commitment_is_corrected_without_deleting_it() {
    let (server, api, agent) = golden_server().await;
    let pool = server.state.store.pool().clone();
    // A commitment stored with wrong data (as if written by a buggy release).
    let bad_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO commitments (batch_id, tenant_id, store_id, tree_depth, leaf_count, padded_leaf_count, \
         merkle_root, prev_state_root, new_state_root, sequence_start, sequence_end) \
         VALUES ($1, $2, $3, 1, 2, 2, $4, $5, $4, 1, 2)",
    )
    .bind(bad_id)
    .bind(agent.tenant_id)
    .bind(agent.store_id)
    .bind(vec![7u8; 32])
    .bind(vec![0u8; 32])
    .execute(&pool)
    .await
    .unwrap();
    // The database refuses to delete or rewrite it.
    assert!(sqlx::query("DELETE FROM commitments WHERE batch_id = $1").bind(bad_id).execute(&pool).await.is_err());
    assert!(
        sqlx::query("UPDATE commitments SET merkle_root = $2 WHERE batch_id = $1")
            .bind(bad_id)
            .bind(vec![8u8; 32])
            .execute(&pool)
            .await
            .is_err()
    );
    assert!(sqlx::raw_sql("TRUNCATE commitments CASCADE").execute(&pool).await.is_err());

    let (status, fixed) =
        api.post(&format!("/api/v1/ves/commitments/{bad_id}/correct"), json!({"reason": "wrong merkle root"})).await;
    assert_eq!(status, 200, "{fixed}");
    let g = golden();
    assert_eq!(fixed["merkle_root"], g["state_roots"][1]["merkle_root"]);
    assert_eq!(fixed["new_state_root"], g["state_roots"][1]["new_state_root"]);
    assert_eq!(fixed["corrects_batch_id"], json!(bad_id));
    let (status, bad) = api.get(&format!("/api/v1/ves/commitments/{bad_id}")).await;
    assert_eq!(status, 200, "the bad commitment stays readable");
    assert_eq!(bad["superseded_by"], fixed["batch_id"]);
    assert_eq!(bad["metadata"]["correction_reason"], "wrong merkle root");
    // Proofs now come from the correction; it cannot be corrected twice.
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let (_, proof) = api.get(&format!("/api/v1/ves/proofs/2?{q}")).await;
    assert_eq!(proof["batch_id"], fixed["batch_id"]);
    let (status, _) = api.post(&format!("/api/v1/ves/commitments/{bad_id}/correct"), json!({"reason": "again"})).await;
    assert_eq!(status, 409);
    let (_, live) = api.get(&format!("/api/v1/ves/commitments?{q}")).await;
    assert_eq!(live["count"], 1);
    let (_, all) = api.get(&format!("/api/v1/ves/commitments?{q}&include_superseded=true")).await;
    assert_eq!(all["count"], 2);
    let (_, unanchored) = api.get(&format!("/api/v1/ves/commitments?{q}&anchored=false")).await;
    assert_eq!(unanchored["count"], 1);
    let (_, anchored) = api.get(&format!("/api/v1/ves/commitments?{q}&anchored=true")).await;
    assert_eq!(anchored["count"], 0);
}

#[tokio::test]
async fn another_tenants_commitment_is_not_found() {
    let (_server, api, agent) = golden_server().await;
    let (_, c) = commit(&api, &agent, 1, 2).await;
    let stranger = api.with_key(&api.mint_key(Uuid::new_v4(), &[], &["read", "write", "admin"]).await);
    let (status, _) = stranger.get(&format!("/api/v1/ves/commitments/{}", c["batch_id"].as_str().unwrap())).await;
    assert_eq!(status, 404);
    let (status, _) = commit(&stranger, &agent, 3, 3).await;
    assert_eq!(status, 403);
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    assert_eq!(stranger.get(&format!("/api/v1/ves/proofs/1?{q}")).await.0, 403);
    assert_eq!(stranger.get(&format!("/api/v1/ves/commitments?{q}")).await.0, 403);
    let (status, _) = stranger
        .post(&format!("/api/v1/ves/commitments/{}/correct", c["batch_id"].as_str().unwrap()), json!({"reason": "x"}))
        .await;
    assert_eq!(status, 404);
}

/// Checks every proof of a commitment against leaves computed here from the events sent.
async fn assert_every_proof_holds(api: &Api, agent: &Agent, commitment: &Value, leaves: &[[u8; 32]]) {
    let start = commitment["sequence_start"].as_i64().unwrap();
    let end = commitment["sequence_end"].as_i64().unwrap();
    let range = &leaves[start as usize - 1..end as usize];
    let root = ves::merkle::merkle_root(range);
    assert_eq!(commitment["merkle_root"], hex::encode(root), "{commitment}");
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    for seq in start..=end {
        let (status, proof) = api.get(&format!("/api/v1/ves/proofs/{seq}?{q}")).await;
        assert_eq!(status, 200, "{proof}");
        assert_eq!(proof["batch_id"], commitment["batch_id"]);
        let index = (seq - start) as usize;
        assert_eq!(proof["leaf_index"], index);
        assert_eq!(proof["leaf_hash"], hex::encode(range[index]), "seq {seq}");
        let path: Vec<[u8; 32]> = proof["proof_path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        assert_eq!(path, ves::merkle::MerkleTree::new(range.to_vec()).proof(index).unwrap(), "seq {seq}");
    }
}

#[tokio::test]
async fn proofs_hold_for_every_event_whatever_the_leaf_runs_look_like() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    // Requests of uneven sizes: each sequencing transaction writes one leaf run, so run boundaries fall
    // anywhere relative to the 32-event blocks that proofs recompute.
    let events: Vec<VesEventEnvelope> = (0..150).map(|i| agent.event(i)).collect();
    let mut sent = 0;
    for size in [1, 7, 30, 2, 35, 1, 1, 40, 33] {
        let (status, body) = api.ingest(agent.agent_id, &events[sent..sent + size]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["eventsAccepted"], size, "{body}");
        sent += size;
    }
    let leaves: Vec<[u8; 32]> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            ves::hash::leaf_hash(e.tenant_id, e.store_id, i as u64 + 1, &e.signing_hash(), &e.agent_signature.0)
        })
        .collect();
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_leaf_runs WHERE tenant_id = $1 AND store_id = $2")
        .bind(agent.tenant_id)
        .bind(agent.store_id)
        .fetch_one(server.state.store.pool())
        .await
        .unwrap();
    assert_eq!(runs, 9, "one leaf run per sequencing transaction");

    // Depth 7: the two levels above the 32-event blocks come from the stored levels, and the last
    // block is partial (75 = 2 * 32 + 11).
    let (status, first) = commit(&api, &agent, 1, 75).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["tree_depth"], 7);
    assert_every_proof_holds(&api, &agent, &first, &leaves).await;
    // A commitment that starts off any block or run boundary.
    let (status, second) = commit(&api, &agent, 76, 110).await;
    assert_eq!(status, 200, "{second}");
    assert_every_proof_holds(&api, &agent, &second, &leaves).await;

    // Events whose runs are missing (stored by a version without runs): commitments and proofs fall
    // back to the log and give the same answers.
    tamper(
        server.state.store.pool(),
        &format!(
            "DELETE FROM event_leaf_runs WHERE tenant_id = '{}' AND store_id = '{}' AND first_sequence > 40",
            agent.tenant_id, agent.store_id
        ),
    )
    .await;
    assert_every_proof_holds(&api, &agent, &first, &leaves).await;
    let (status, third) = commit(&api, &agent, 111, 150).await;
    assert_eq!(status, 200, "{third}");
    assert_every_proof_holds(&api, &agent, &third, &leaves).await;
    let (_, report) =
        api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id, "storeId": agent.store_id})).await;
    assert_eq!(report["ok"], true, "missing runs are not a finding: {report}");

    // A run that disagrees with the log is.
    tamper(server.state.store.pool(), &flip_run_byte(&agent, "leaves", 9)).await;
    let (_, report) =
        api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id, "storeId": agent.store_id})).await;
    assert_eq!(report["ok"], false, "{report}");
    let findings = report["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["kind"] == "leaf_run_mismatch" && f["sequenceNumber"] == 10), "{report}");

    // So is a run whose transparency log leaves disagree with the entries the events give (the
    // integrator would build a tree that the served entries do not match).
    tamper(server.state.store.pool(), &flip_run_byte(&agent, "tlog_leaves", 2)).await;
    let (_, report) =
        api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id, "storeId": agent.store_id})).await;
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["kind"] == "leaf_run_mismatch"
            && f["sequenceNumber"] == 3
            && f["detail"].as_str().unwrap().contains("transparency log")),
        "{report}"
    );
}

/// SQL that flips one bit of the second leaf (byte 40) in `column` of the run starting at `first`.
fn flip_run_byte(agent: &Agent, column: &str, first: i64) -> String {
    format!(
        "UPDATE event_leaf_runs SET {column} = overlay({column} PLACING \
           set_byte('\\x00'::bytea, 0, get_byte({column}, 39) # 1) FROM 40 FOR 1) \
         WHERE tenant_id = '{}' AND store_id = '{}' AND first_sequence = {first}",
        agent.tenant_id, agent.store_id
    )
}

#[tokio::test]
async fn a_row_removed_behind_the_sequencers_back_fails_the_next_commitment() {
    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let events: Vec<VesEventEnvelope> = (0..10).map(|i| agent.event(i)).collect();
    api.ingest(agent.agent_id, &events).await;
    // The leaf runs still hold event 5's leaf; the record of the removal sends the commitment to the
    // log itself, which has the gap.
    tamper(server.state.store.pool(), &delete_event_sql(&agent, 5)).await;
    let (status, body) = commit(&api, &agent, 1, 10).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("non-contiguous sequence") && message.contains("expected 5"), "{body}");
    let (_, report) =
        api.post("/api/v1/admin/verify", json!({"tenantId": agent.tenant_id, "storeId": agent.store_id})).await;
    let kinds = findings(&report);
    assert!(kinds.contains(&("gap", 5)) && kinds.contains(&("log_modified", 5)), "{report}");
    // Another stream is untouched and still commits from its runs.
    let other = Agent::random();
    api.register_key(&other).await;
    api.ingest(other.agent_id, &[other.event(1), other.event(2)]).await;
    let (status, body) = commit(&api, &other, 1, 2).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn signed_checkpoints_and_consistency_proofs_link_the_states_of_a_stream() {
    use signed_note::{Note, StandardVerifier, VerifierList};
    use ves::chain::{ChainLink, verify_consistency};

    let server = TestServer::start().await;
    let api = Api::admin(&server);
    let agent = Agent::random();
    api.register_key(&agent).await;
    let q = format!("tenant_id={}&store_id={}", agent.tenant_id, agent.store_id);
    let (status, body) = api.get(&format!("/api/v1/ves/checkpoint?{q}")).await;
    assert_eq!(status, 404, "no commitment, no checkpoint: {body}");

    let events: Vec<VesEventEnvelope> = (0..30).map(|i| agent.event(i)).collect();
    api.ingest(agent.agent_id, &events).await;
    let mut commitments = Vec::new();
    for (start, end) in [(1, 4), (5, 17), (18, 30)] {
        let (status, c) = commit(&api, &agent, start, end).await;
        assert_eq!(status, 200, "{c}");
        commitments.push(c);
    }

    // The checkpoint: signed by the key /api/v1/ves/sequencer publishes, at the last commitment.
    let (_, info) = api.get("/api/v1/ves/sequencer").await;
    let verifier = StandardVerifier::new(info["checkpoint_verifier_key"].as_str().unwrap()).unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/ves/checkpoint?{q}", server.base_url))
        .header("authorization", format!("ApiKey {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    let note = Note::from_bytes(&response.bytes().await.unwrap()).unwrap();
    note.verify(&VerifierList::new(vec![Box::new(verifier)])).expect("the checkpoint's signature verifies");
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!(checkpoint.origin(), format!("stateset-sequencer/{}/{}", agent.tenant_id, agent.store_id));
    assert_eq!(checkpoint.size(), 30);
    assert_eq!(hex::encode(checkpoint.hash().0), commitments[2]["new_state_root"]);
    assert_eq!(checkpoint.extension(), format!("ves-commitment {}\n", commitments[2]["batch_id"].as_str().unwrap()));

    // Consistency from the empty stream and from the first commitment to the last: the proof
    // leads from one state root to the other.
    let root = |v: &Value| -> [u8; 32] { hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
    for (from_size, from_root) in [(0u64, [0u8; 32]), (4, root(&commitments[0]["new_state_root"]))] {
        let (status, proof) = api.get(&format!("/api/v1/ves/commitments/consistency?{q}&from_size={from_size}")).await;
        assert_eq!(status, 200, "{proof}");
        assert_eq!(proof["to_size"], 30);
        assert_eq!(proof["from_state_root"], hex::encode(from_root));
        let links: Vec<ChainLink> = proof["commitments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ChainLink {
                sequence_start: c["sequence_start"].as_u64().unwrap(),
                sequence_end: c["sequence_end"].as_u64().unwrap(),
                merkle_root: root(&c["merkle_root"]),
            })
            .collect();
        assert_eq!(links.len(), if from_size == 0 { 3 } else { 2 });
        verify_consistency(
            agent.tenant_id,
            agent.store_id,
            (from_size, &from_root),
            (30, &checkpoint.hash().0),
            &links,
        )
        .expect("the proof links the two checkpoints");
        // It does not link the later state to a forged earlier one.
        assert!(
            verify_consistency(
                agent.tenant_id,
                agent.store_id,
                (from_size, &[9; 32]),
                (30, &checkpoint.hash().0),
                &links
            )
            .is_err()
        );
    }
    let (status, proof) = api.get(&format!("/api/v1/ves/commitments/consistency?{q}&from_size=4&to_size=17")).await;
    assert_eq!(status, 200, "{proof}");
    assert_eq!(proof["commitments"].as_array().unwrap().len(), 1);
    assert_eq!(proof["to_state_root"], commitments[1]["new_state_root"]);

    // Sizes that are not commitment ends are refused with a reason.
    for bad in ["from_size=5", "from_size=4&to_size=18", "from_size=31", "from_size=17&to_size=4"] {
        let (status, body) = api.get(&format!("/api/v1/ves/commitments/consistency?{q}&{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // Another tenant's credential sees nothing of it.
    let other = api.mint_key(Uuid::new_v4(), &[], &["read"]).await;
    let (status, _) = api.with_key(&other).get(&format!("/api/v1/ves/checkpoint?{q}")).await;
    assert_eq!(status, 403);
}
