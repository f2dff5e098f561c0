//! The registry's ABI is the existing one (ves-wire.md §6.5): same selectors, same event topics,
//! nothing missing, nothing extra; and the checked-in artifacts are what the source compiles to.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use alloy::json_abi::JsonAbi;
use alloy::primitives::{B256, keccak256};
use alloy::sol_types::{SolCall, SolEvent};
use anchor::contract::StateSetAnchor;

/// Canonical signature and selector of every function, as listed in ves-wire.md §6.5.
const FUNCTIONS: [(&str, &str); 14] = [
    ("anchor(bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)", "012f9824"),
    ("anchorBatch(bytes32[],bytes32[],bytes32[],bytes32[],bytes32[],uint64[],uint64[],uint32[])", "0c40c209"),
    ("verifyEventsRoot(bytes32,bytes32)", "5fb58a3a"),
    ("getCommitment(bytes32)", "7795820c"),
    ("getLatestSequence(bytes32,bytes32)", "2acb5530"),
    ("getAnchoredCount()", "469a4f5b"),
    ("isAnchored(bytes32)", "4f0b5801"),
    ("transferOwnership(address)", "f2fde38b"),
    ("setPermissionless(bool)", "75708a59"),
    ("commitments(bytes32)", "839df945"),
    ("latestSequence(bytes32)", "8c14b3c1"),
    ("anchoredBatches(uint256)", "7b1f7a23"),
    ("owner()", "8da5cb5b"),
    ("permissionless()", "a1256f9f"),
];

/// Canonical signature and topic0 of every event.
const EVENTS: [(&str, &str); 2] = [
    (
        "CommitmentAnchored(bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32,uint256)",
        "c780e2bc15a6058af6a033362c346780c81f2a531fa72e8fffd0570ecc91e848",
    ),
    ("BatchAnchored(bytes32,uint256,uint256)", "569739a8a132d28586d65d35b6a86902bf0adbce83a4651378ff888d03b70255"),
];

fn selector_hex(selector: [u8; 4]) -> String {
    alloy::hex::encode(selector)
}

#[test]
fn the_binding_has_the_selectors_of_the_existing_registry() {
    use StateSetAnchor::*;
    let binding: [(&str, [u8; 4]); 14] = [
        (anchorCall::SIGNATURE, anchorCall::SELECTOR),
        (anchorBatchCall::SIGNATURE, anchorBatchCall::SELECTOR),
        (verifyEventsRootCall::SIGNATURE, verifyEventsRootCall::SELECTOR),
        (getCommitmentCall::SIGNATURE, getCommitmentCall::SELECTOR),
        (getLatestSequenceCall::SIGNATURE, getLatestSequenceCall::SELECTOR),
        (getAnchoredCountCall::SIGNATURE, getAnchoredCountCall::SELECTOR),
        (isAnchoredCall::SIGNATURE, isAnchoredCall::SELECTOR),
        (transferOwnershipCall::SIGNATURE, transferOwnershipCall::SELECTOR),
        (setPermissionlessCall::SIGNATURE, setPermissionlessCall::SELECTOR),
        (commitmentsCall::SIGNATURE, commitmentsCall::SELECTOR),
        (latestSequenceCall::SIGNATURE, latestSequenceCall::SELECTOR),
        (anchoredBatchesCall::SIGNATURE, anchoredBatchesCall::SELECTOR),
        (ownerCall::SIGNATURE, ownerCall::SELECTOR),
        (permissionlessCall::SIGNATURE, permissionlessCall::SELECTOR),
    ];
    for ((signature, selector), (expected_signature, expected_selector)) in binding.iter().zip(FUNCTIONS) {
        assert_eq!(*signature, expected_signature);
        assert_eq!(selector_hex(*selector), expected_selector, "{signature}");
        // And the expected values really are keccak256 of the signature.
        assert_eq!(alloy::hex::encode(&keccak256(expected_signature)[..4]), expected_selector);
    }
}

#[test]
fn the_binding_has_the_event_topics_of_the_existing_registry() {
    use StateSetAnchor::*;
    let binding = [
        (CommitmentAnchored::SIGNATURE, CommitmentAnchored::SIGNATURE_HASH),
        (BatchAnchored::SIGNATURE, BatchAnchored::SIGNATURE_HASH),
    ];
    for ((signature, topic), (expected_signature, expected_topic)) in binding.into_iter().zip(EVENTS) {
        assert_eq!(signature, expected_signature);
        assert_eq!(topic, expected_topic.parse::<B256>().unwrap(), "{signature}");
        assert_eq!(keccak256(expected_signature), topic);
    }
    // Indexed fields: batchId and tenantId; batchRoot.
    let abi = compiled_abi();
    let indexed = |name: &str| -> Vec<String> {
        abi.events[name][0].inputs.iter().filter(|p| p.indexed).map(|p| p.name.clone()).collect()
    };
    assert_eq!(indexed("CommitmentAnchored"), ["batchId", "tenantId"]);
    assert_eq!(indexed("BatchAnchored"), ["batchRoot"]);
}

#[test]
fn the_compiled_abi_has_exactly_the_functions_and_events_of_the_existing_registry() {
    let abi = compiled_abi();
    let functions: BTreeMap<String, String> =
        abi.functions().map(|f| (f.signature(), selector_hex(f.selector().0))).collect();
    let expected: BTreeMap<String, String> = FUNCTIONS.iter().map(|(s, h)| (s.to_string(), h.to_string())).collect();
    assert_eq!(functions, expected);

    let events: BTreeMap<String, B256> = abi.events().map(|e| (e.signature(), e.selector())).collect();
    let expected: BTreeMap<String, B256> = EVENTS.iter().map(|(s, h)| (s.to_string(), h.parse().unwrap())).collect();
    assert_eq!(events, expected);

    assert!(abi.errors.is_empty(), "the registry reverts with strings, not custom errors");
    let constructor = abi.constructor.as_ref().expect("constructor");
    assert_eq!(constructor.inputs.len(), 1);
    assert_eq!(constructor.inputs[0].ty, "bool");
}

#[test]
fn get_commitment_returns_the_nine_fields_in_the_existing_order() {
    let abi = compiled_abi();
    let outputs: Vec<&str> = abi.functions["getCommitment"][0].outputs.iter().map(|p| p.ty.as_str()).collect();
    assert_eq!(
        outputs,
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint32", "uint256", "address"]
    );
}

#[test]
fn the_embedded_bytecode_ends_with_the_metadata_of_the_pinned_compiler() {
    let code = anchor::contract::bytecode();
    assert!(code.len() > 1000, "suspiciously short bytecode: {} bytes", code.len());
    // solc appends CBOR metadata and its length (2 bytes, big-endian); the metadata ends with
    // "solc" => bytes3(major, minor, patch). 0.8.37 is SOLC_VERSION in scripts/install-tools.
    let len = usize::from(u16::from_be_bytes([code[code.len() - 2], code[code.len() - 1]]));
    let metadata = &code[code.len() - 2 - len..code.len() - 2];
    assert!(metadata.ends_with(b"solc\x43\x00\x08\x25"), "metadata: {}", alloy::hex::encode(metadata));
}

/// NB: needs node and the pinned solc (scripts/install-tools, which build.sh runs); takes ~15 s.
#[test]
fn the_checked_in_artifacts_match_a_fresh_compile_of_the_contract_source() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/build.sh");
    let output = Command::new(&script).arg("--check").output().expect("run contracts/build.sh --check");
    assert!(
        output.status.success(),
        "{} --check failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn compiled_abi() -> JsonAbi {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/out/StateSetAnchor.abi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
