//! Anchoring against a real local chain: anvil started per test, registry deployed from the
//! checked-in bytecode, every call through `AnchorClient`.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use anchor::testing::Anvil;
use anchor::{
    AnchorClient, AnchorConfig, AnchorError, BreakerConfig, CircuitState, CommitmentToAnchor, RetryPolicy,
    deploy_registry, uuid_to_bytes32,
};
use secrecy::SecretString;
use uuid::Uuid;

/// A chain with a freshly deployed, owner-only registry.
struct Chain {
    anvil: Anvil,
    registry: Address,
}

impl Chain {
    async fn start() -> Self {
        let anvil = Anvil::start();
        let registry = deploy_registry(&anvil.rpc_url, &dev_key(), false).await.expect("registry deploys");
        Self { anvil, registry }
    }

    fn config(&self) -> AnchorConfig {
        AnchorConfig::new(self.anvil.rpc_url.clone(), self.registry, dev_key(), Anvil::CHAIN_ID)
    }

    fn client(&self) -> AnchorClient {
        AnchorClient::new(self.config()).expect("client builds")
    }
}

fn dev_key() -> SecretString {
    SecretString::from(Anvil::DEV_PRIVATE_KEY)
}

/// A commitment of a fresh stream with distinct, recognisable roots.
fn commitment(sequence_start: u64, sequence_end: u64) -> CommitmentToAnchor {
    CommitmentToAnchor {
        batch_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        store_id: Uuid::new_v4(),
        merkle_root: [0x11; 32],
        new_state_root: [0x22; 32],
        sequence_start,
        sequence_end,
        leaf_count: u32::try_from(sequence_end - sequence_start + 1).unwrap(),
    }
}

/// Fast retries so that tests against a stopped chain do not wait for production back-off.
fn quick_retry() -> RetryPolicy {
    RetryPolicy { max_retries: 1, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(20) }
}

#[tokio::test]
async fn an_anchored_commitment_reads_back_exactly_as_sent() {
    let chain = Chain::start().await;
    let client = chain.client();
    let mut c = commitment(101, 164);
    c.merkle_root = core::array::from_fn(|i| i as u8);
    c.new_state_root = core::array::from_fn(|i| 0xff - i as u8);

    assert!(!client.is_anchored(c.batch_id).await.unwrap());
    assert_eq!(client.get_commitment(c.batch_id).await.unwrap(), None);
    let unknown = client.registry().getCommitment(B256::from(uuid_to_bytes32(c.batch_id))).call().await.unwrap_err();
    assert!(unknown.to_string().contains("Not anchored"), "{unknown}");

    let receipt = client.anchor(&c).await.expect("anchor succeeds");
    assert_eq!(receipt.chain_id, Anvil::CHAIN_ID);
    assert!(receipt.block_number >= 1);
    assert_ne!(receipt.tx_hash, [0u8; 32]);
    assert!(client.block_number().await.unwrap() >= receipt.block_number);

    assert!(client.is_anchored(c.batch_id).await.unwrap());
    let stored = client.get_commitment(c.batch_id).await.unwrap().expect("commitment stored");
    assert_eq!(stored.batch_id, uuid_to_bytes32(c.batch_id));
    assert_eq!(stored.tenant_id, uuid_to_bytes32(c.tenant_id));
    assert_eq!(stored.store_id, uuid_to_bytes32(c.store_id));
    assert_eq!(stored.events_root, c.merkle_root);
    assert_eq!(stored.state_root, c.new_state_root);
    assert_eq!((stored.sequence_start, stored.sequence_end, stored.event_count), (101, 164, 64));
    assert_eq!(stored.anchored_by, Anvil::DEV_ADDRESS.parse::<Address>().unwrap());
    assert!(stored.anchored_at > 0);

    // The contract's own views agree.
    let registry = client.registry();
    let batch = B256::from(uuid_to_bytes32(c.batch_id));
    assert!(registry.verifyEventsRoot(batch, B256::from(c.merkle_root)).call().await.unwrap());
    assert!(!registry.verifyEventsRoot(batch, B256::from(c.new_state_root)).call().await.unwrap());
    assert_eq!(registry.getAnchoredCount().call().await.unwrap(), alloy::primitives::U256::from(1));
    assert_eq!(registry.anchoredBatches(alloy::primitives::U256::ZERO).call().await.unwrap(), batch);
    assert_eq!(client.circuit().state, CircuitState::Closed);
}

#[tokio::test]
async fn anchoring_the_same_batch_twice_is_reported_as_already_anchored() {
    let chain = Chain::start().await;
    let client = chain.client();
    let c = commitment(1, 10);
    client.anchor(&c).await.expect("first anchor succeeds");

    let mut again = c;
    again.merkle_root = [0x99; 32];
    assert_eq!(client.anchor(&again).await, Err(AnchorError::AlreadyAnchored));
    // The first commitment is untouched, and a revert is no reason to open the breaker.
    assert_eq!(client.get_commitment(c.batch_id).await.unwrap().unwrap().events_root, c.merkle_root);
    assert_eq!(client.circuit().consecutive_failures, 0);
}

#[tokio::test]
async fn latest_sequence_follows_the_highest_sequence_end_anchored_for_a_stream() {
    let chain = Chain::start().await;
    let client = chain.client();
    let first = commitment(1, 10);
    let (tenant, store) = (first.tenant_id, first.store_id);
    assert_eq!(client.latest_sequence(tenant, store).await.unwrap(), 0);

    client.anchor(&first).await.unwrap();
    assert_eq!(client.latest_sequence(tenant, store).await.unwrap(), 10);

    let second = CommitmentToAnchor { batch_id: Uuid::new_v4(), sequence_start: 11, sequence_end: 25, ..first };
    client.anchor(&second).await.unwrap();
    assert_eq!(client.latest_sequence(tenant, store).await.unwrap(), 25);

    // An older range anchored late does not move it back.
    let late = CommitmentToAnchor { batch_id: Uuid::new_v4(), sequence_start: 3, sequence_end: 4, ..first };
    client.anchor(&late).await.unwrap();
    assert_eq!(client.latest_sequence(tenant, store).await.unwrap(), 25);

    // Other streams are independent.
    assert_eq!(client.latest_sequence(tenant, Uuid::new_v4()).await.unwrap(), 0);
}

#[tokio::test]
async fn the_registry_rejects_invalid_commitments_and_strangers_with_its_revert_strings() {
    let chain = Chain::start().await;
    let client = chain.client();

    let empty = CommitmentToAnchor { leaf_count: 0, ..commitment(1, 1) };
    assert_eq!(client.anchor(&empty).await, Err(AnchorError::Reverted("Empty batch".into())));

    let inverted = commitment(5, 5);
    let inverted = CommitmentToAnchor { sequence_start: 6, ..inverted };
    assert_eq!(client.anchor(&inverted).await, Err(AnchorError::Reverted("Invalid sequence range".into())));

    let stranger = AnchorClient::new(AnchorConfig {
        private_key: SecretString::from(Anvil::SECOND_PRIVATE_KEY),
        ..chain.config()
    })
    .unwrap();
    assert_eq!(stranger.anchor(&commitment(1, 2)).await, Err(AnchorError::Reverted("Not authorized".into())));
    let not_owner = stranger.registry().setPermissionless(true).send().await.unwrap_err();
    assert!(not_owner.to_string().contains("Not owner"), "{not_owner}");
    let not_owner = stranger.registry().transferOwnership(Address::repeat_byte(9)).send().await.unwrap_err();
    assert!(not_owner.to_string().contains("Not owner"), "{not_owner}");
    let nobody = client.registry().transferOwnership(Address::ZERO).send().await.unwrap_err();
    assert!(nobody.to_string().contains("Invalid owner"), "ownership can never be given away to nobody: {nobody}");

    // The owner opens the registry to everyone; then the stranger may anchor.
    let registry = client.registry();
    assert!(!registry.permissionless().call().await.unwrap());
    assert_eq!(registry.owner().call().await.unwrap(), Anvil::DEV_ADDRESS.parse::<Address>().unwrap());
    registry.setPermissionless(true).send().await.unwrap().get_receipt().await.unwrap();
    stranger.anchor(&commitment(1, 2)).await.expect("anyone may anchor on a permissionless registry");
}

#[tokio::test]
async fn anchor_batch_records_every_item_and_emits_one_batch_anchored_event() {
    use alloy::sol_types::SolEvent;
    use anchor::contract::StateSetAnchor;

    let chain = Chain::start().await;
    let client = chain.client();
    let items = [commitment(1, 3), commitment(4, 4), commitment(1, 1)];
    let ids: Vec<B256> = items.iter().map(|c| B256::from(uuid_to_bytes32(c.batch_id))).collect();
    let b32 = |f: fn(&CommitmentToAnchor) -> [u8; 32]| items.iter().map(|c| B256::from(f(c))).collect::<Vec<_>>();

    let receipt = client
        .registry()
        .anchorBatch(
            ids.clone(),
            b32(|c| uuid_to_bytes32(c.tenant_id)),
            b32(|c| uuid_to_bytes32(c.store_id)),
            b32(|c| c.merkle_root),
            b32(|c| c.new_state_root),
            items.iter().map(|c| c.sequence_start).collect(),
            items.iter().map(|c| c.sequence_end).collect(),
            vec![3, 1, 0], // anchorBatch, unlike anchor, accepts an empty item
        )
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());

    for c in &items {
        assert!(client.is_anchored(c.batch_id).await.unwrap());
    }
    let topics: Vec<B256> = receipt.logs().iter().map(|l| l.topics()[0]).collect();
    let anchored = StateSetAnchor::CommitmentAnchored::SIGNATURE_HASH;
    assert_eq!(topics, vec![anchored, anchored, anchored, StateSetAnchor::BatchAnchored::SIGNATURE_HASH]);
    let batch_event = StateSetAnchor::BatchAnchored::decode_log_data(receipt.logs()[3].data()).unwrap();
    let packed: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
    assert_eq!(batch_event.batchRoot, alloy::primitives::keccak256(packed));
    assert_eq!(batch_event.commitmentCount, alloy::primitives::U256::from(3));

    let mismatch = client
        .registry()
        .anchorBatch(vec![B256::repeat_byte(7)], vec![], vec![], vec![], vec![], vec![], vec![], vec![])
        .send()
        .await
        .unwrap_err();
    assert!(mismatch.to_string().contains("Array length mismatch"), "{mismatch}");
}

#[tokio::test]
async fn the_breaker_opens_while_the_chain_is_down_fails_fast_and_closes_after_the_chain_recovers() {
    let mut chain = Chain::start().await;
    let open_timeout = Duration::from_millis(500);
    let client = AnchorClient::new(AnchorConfig {
        breaker: BreakerConfig { failure_threshold: 3, success_threshold: 2, open_timeout },
        rpc_timeout: Duration::from_secs(5),
        ..chain.config()
    })
    .unwrap()
    .with_retry(quick_retry());
    let before_outage = commitment(1, 5);
    client.anchor(&before_outage).await.expect("anchors while the chain is up");

    chain.anvil.stop();
    for attempt in 1..=3 {
        assert_eq!(client.circuit().state, CircuitState::Closed, "still closed before failure {attempt}");
        let err = client.anchor(&commitment(6, 9)).await.unwrap_err();
        assert!(matches!(err, AnchorError::Rpc(_)), "attempt {attempt}: {err:?}");
    }
    let opened = client.circuit();
    assert_eq!(opened.state, CircuitState::Open);
    assert_eq!(opened.opened_total, 1);
    assert_eq!(opened.consecutive_failures, 3);

    // While open, calls are rejected before any network I/O.
    let started = Instant::now();
    let err = client.anchor(&commitment(6, 9)).await.unwrap_err();
    let AnchorError::CircuitOpen { retry_in } = err else { panic!("expected CircuitOpen, got {err:?}") };
    assert!(retry_in <= open_timeout);
    assert!(started.elapsed() < Duration::from_millis(100), "rejected in {:?}", started.elapsed());
    assert!(matches!(client.block_number().await, Err(AnchorError::CircuitOpen { .. })));
    assert!(client.circuit().rejected_total >= 2);

    // The chain comes back with its state; once the open timeout passes, trial calls succeed.
    chain.anvil.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_success = loop {
        match client.is_anchored(before_outage.batch_id).await {
            Ok(anchored) => break anchored,
            Err(AnchorError::CircuitOpen { retry_in }) if Instant::now() < deadline => {
                tokio::time::sleep(retry_in).await;
            }
            Err(other) => panic!("chain did not recover before the deadline: {other:?}"),
        }
    };
    assert!(first_success, "the restarted chain kept the commitment anchored before the outage");
    assert_eq!(client.circuit().state, CircuitState::HalfOpen, "one success of two needed");

    let after_outage = commitment(6, 9);
    client.anchor(&after_outage).await.expect("anchors after recovery");
    let closed = client.circuit();
    assert_eq!(closed.state, CircuitState::Closed);
    assert_eq!(closed.consecutive_failures, 0);
    assert_eq!(closed.transitions_total, 3, "closed -> open -> half_open -> closed");
    assert!(client.is_anchored(after_outage.batch_id).await.unwrap());
}

#[tokio::test]
async fn a_chain_id_that_does_not_match_the_node_is_a_configuration_error_naming_both() {
    let chain = Chain::start().await;
    let client = AnchorClient::new(AnchorConfig { chain_id: anchor::DEFAULT_CHAIN_ID, ..chain.config() }).unwrap();
    let err = client.anchor(&commitment(1, 1)).await.unwrap_err();
    let AnchorError::Config(message) = &err else { panic!("expected Config, got {err:?}") };
    assert!(message.contains("84532001") && message.contains("31337"), "{message}");
    assert_eq!(client.circuit().consecutive_failures, 0, "the node answered; not an outage");
}

#[tokio::test]
async fn reading_from_an_address_without_the_registry_is_a_configuration_error() {
    let chain = Chain::start().await;
    let client =
        AnchorClient::new(AnchorConfig { registry_address: Address::repeat_byte(0x42), ..chain.config() }).unwrap();
    let err = client.is_anchored(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(&err, AnchorError::Config(m) if m.contains("SET_REGISTRY_ADDRESS")), "{err:?}");
}

#[tokio::test]
async fn errors_and_debug_output_never_contain_the_private_key_or_the_rpc_url_path() {
    let chain = Chain::start().await;
    let key_hex = Anvil::DEV_PRIVATE_KEY.trim_start_matches("0x");
    let mut seen = Vec::new();

    // An unreachable endpoint whose URL carries a token, as hosted RPC URLs do.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/v2/secret-api-token")
    };
    let config = AnchorConfig {
        rpc_url: unreachable,
        breaker: BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() },
        ..chain.config()
    };
    seen.push(format!("{config:?}"));
    let client = AnchorClient::new(config).unwrap().with_retry(quick_retry());
    seen.push(format!("{client:?}"));
    for result in [client.anchor(&commitment(1, 1)).await.map(|_| ()), client.block_number().await.map(|_| ())] {
        let err = result.unwrap_err();
        seen.push(err.to_string());
        seen.push(format!("{err:?}"));
    }
    assert!(seen.iter().any(|s| s.contains("circuit breaker is open")), "{seen:#?}");
    assert!(seen.iter().any(|s| s.contains("http://127.0.0.1:")), "errors still name the endpoint: {seen:#?}");

    // A revert, a chain-id mismatch and a malformed key.
    let reverted = chain.client().anchor(&CommitmentToAnchor { leaf_count: 0, ..commitment(1, 1) }).await;
    seen.push(format!("{reverted:?}"));
    let wrong_chain = AnchorClient::new(AnchorConfig { chain_id: 1, ..chain.config() }).unwrap();
    seen.push(format!("{:?}", wrong_chain.anchor(&commitment(1, 1)).await));
    let bad_key = format!("{}zz", &key_hex[..62]);
    let bad = AnchorClient::new(AnchorConfig { private_key: SecretString::from(bad_key.clone()), ..chain.config() });
    seen.push(format!("{:?}", bad.unwrap_err()));

    for text in &seen {
        assert!(!text.contains(key_hex), "private key leaked: {text}");
        assert!(!text.contains(&key_hex[..16]), "part of the private key leaked: {text}");
        assert!(!text.contains(&bad_key[..40]), "part of a malformed key leaked: {text}");
        assert!(!text.contains("secret-api-token"), "RPC URL path leaked: {text}");
    }
}

#[test]
fn a_restarted_anvil_serves_the_same_chain_on_the_same_port() {
    let mut anvil = Anvil::start();
    let block_of = |url: &str| -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = AnchorClient::new(AnchorConfig::new(url, Address::ZERO, dev_key(), Anvil::CHAIN_ID)).unwrap();
        runtime.block_on(async {
            let registry = deploy_registry(url, &dev_key(), true).await.unwrap();
            assert_ne!(registry, Address::ZERO);
            client.block_number().await.unwrap()
        })
    };
    let port = anvil.port;
    let before = block_of(&anvil.rpc_url);
    assert!(before >= 1);
    anvil.restart();
    assert_eq!(anvil.port, port);
    assert!(anvil.is_running());
    let after = block_of(&anvil.rpc_url);
    assert_eq!(after, before + 1, "the chain continued from its previous head");
    anvil.stop();
    assert!(!anvil.is_running());
}

#[tokio::test]
async fn a_hanging_endpoint_fails_after_the_rpc_timeout_and_the_open_circuit_then_fails_fast() {
    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rpc_url = format!("http://{}", silent.local_addr().unwrap());
    let rpc_timeout = Duration::from_millis(300);
    let client = AnchorClient::new(AnchorConfig {
        breaker: BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() },
        rpc_timeout,
        ..AnchorConfig::new(rpc_url, Address::repeat_byte(1), dev_key(), Anvil::CHAIN_ID)
    })
    .unwrap()
    .with_retry(RetryPolicy { max_retries: 0, ..quick_retry() });

    let started = Instant::now();
    let err = client.is_anchored(Uuid::new_v4()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, AnchorError::Rpc(_)), "{err:?}");
    assert!(waited >= rpc_timeout && waited < Duration::from_secs(10), "failed after {waited:?}");
    assert_eq!(client.circuit().state, CircuitState::Open);

    let started = Instant::now();
    let err = client.is_anchored(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, AnchorError::CircuitOpen { .. }), "{err:?}");
    assert!(started.elapsed() < rpc_timeout / 3, "rejected in {:?}", started.elapsed());
}

#[test]
fn anvil_can_be_started_on_a_chosen_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut anvil = Anvil::start_on_port(port);
    assert_eq!(anvil.port, port);
    assert_eq!(anvil.rpc_url, format!("http://127.0.0.1:{port}"));
    assert!(anvil.is_running());
    drop(anvil);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "dropping the harness stops anvil");
}

#[test]
fn the_client_and_its_futures_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync>(_: &T) {}
    fn sendable<T: Send>(_: T) {}
    let client = AnchorClient::new(AnchorConfig::new("http://127.0.0.1:1", Address::ZERO, dev_key(), 1)).unwrap();
    shareable(&client);
    let c = commitment(1, 1);
    sendable(client.anchor(&c));
    sendable(client.is_anchored(c.batch_id));
    sendable(client.get_commitment(c.batch_id));
    sendable(client.latest_sequence(c.tenant_id, c.store_id));
    sendable(client.block_number());
}
