//! The CRDs as the API server sees them: generated YAML in the repository, CEL rules, schema docs.

use kube::CustomResourceExt;
use kube::core::cel::{validate_cel, validate_cel_update};
use serde_json::Value;

use super::*;

const CRDS_IN_REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/sequencer.stateset.io.yaml");
const CRDS_IN_CHART: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/sequencer-operator/crds/sequencer.stateset.io.yaml");

#[test]
fn the_crds_in_the_repository_are_what_the_rust_types_generate() {
    let generated = crds_yaml();
    for path in [CRDS_IN_REPO, CRDS_IN_CHART] {
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date with operator/src/crd/. Regenerate with:\n  \
             cargo run -p sequencer-operator -- crd > crds/sequencer.stateset.io.yaml && \
             cp crds/sequencer.stateset.io.yaml charts/sequencer-operator/crds/"
        );
    }
}

#[test]
fn the_crds_name_the_group_version_kinds_and_short_name_of_the_api() {
    let seq = Sequencer::crd();
    assert_eq!(seq.spec.group, "sequencer.stateset.io");
    assert_eq!(seq.spec.versions[0].name, "v1alpha1");
    assert_eq!(seq.spec.names.kind, "Sequencer");
    assert_eq!(seq.spec.names.short_names, Some(vec!["seq".to_string()]));
    assert_eq!(SequencerAction::crd().spec.names.kind, "SequencerAction");
}

#[test]
fn sequencers_print_ready_replicas_version_and_age() {
    let columns: Vec<String> = Sequencer::crd().spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(columns, vec!["Ready", "Replicas", "Available", "Version", "Age"]);
}

/// Paths of schema properties without a description.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let here = format!("{path}.{name}");
            let is_metadata = path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
            if !is_metadata && property.get("description").and_then(Value::as_str).unwrap_or("").is_empty() {
                out.push(here.clone());
            }
            undocumented(property, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(values, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_field_of_both_crds_has_a_description_for_kubectl_explain() {
    let mut missing = Vec::new();
    undocumented(&schema_of::<Sequencer>(), "", &mut missing);
    undocumented(&schema_of::<SequencerAction>(), "", &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

#[test]
fn defaults_and_enums_live_in_the_schema() {
    let schema = schema_of::<Sequencer>();
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["default"], 1);
    assert_eq!(spec["image"]["default"], DEFAULT_IMAGE);
    assert_eq!(spec["migrations"]["properties"]["mode"]["enum"], serde_json::json!(["Job", "OnStartup", "Disabled"]));
    assert_eq!(spec["migrations"]["properties"]["mode"]["default"], "Job");
    assert_eq!(spec["database"]["properties"]["pool"]["properties"]["maxConnections"]["default"], 20);
    assert_eq!(spec["logging"]["properties"]["format"]["enum"], serde_json::json!(["json", "text"]));
    let action = schema_of::<SequencerAction>();
    assert_eq!(action["properties"]["spec"]["properties"]["deadlineSeconds"]["default"], 600);
    assert_eq!(
        action["properties"]["status"]["properties"]["phase"]["enum"],
        serde_json::json!(["Pending", "Running", "Succeeded", "Failed"])
    );
}

fn sequencer(spec: Value) -> Sequencer {
    let mut base = serde_json::json!({
        "database": {"urlSecret": {"name": "db", "key": "url"}},
        "auth": {"adminApiKeySecret": {"name": "admin", "key": "key"}},
        "receiptSigningKeySecret": {"name": "signing", "key": "seed"},
    });
    merge(&mut base, spec);
    let mut seq = Sequencer::new("ledger", serde_json::from_value(base).unwrap());
    seq.metadata.namespace = Some("payments".into());
    seq
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (k, v) in overlay {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn rejection<K: CustomResourceExt + serde::Serialize>(object: &K) -> String {
    match validate_cel(object) {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn a_complete_sequencer_passes_every_cel_rule() {
    assert_eq!(rejection(&sequencer(serde_json::json!({}))), "");
    assert_eq!(schema_errors(&sequencer(serde_json::json!({}))), "");
    let anchored = sequencer(serde_json::json!({"anchoring": {
        "enabled": true,
        "rpcUrlSecret": {"name": "l2", "key": "url"},
        "privateKeySecret": {"name": "l2", "key": "key"},
        "chainId": 8453,
        "registryAddress": "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    }}));
    assert_eq!(rejection(&anchored), "");
    assert_eq!(schema_errors(&anchored), "");
}

#[test]
fn enabling_anchoring_without_its_secrets_is_rejected_with_a_human_message() {
    let seq = sequencer(serde_json::json!({"anchoring": {
        "enabled": true, "chainId": 8453, "registryAddress": "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    }}));
    assert!(
        rejection(&seq).contains("anchoring.enabled requires anchoring.rpcUrlSecret and anchoring.privateKeySecret"),
        "{}",
        rejection(&seq)
    );
}

#[test]
fn enabling_anchoring_without_chain_and_registry_is_rejected() {
    let seq = sequencer(serde_json::json!({"anchoring": {
        "enabled": true,
        "rpcUrlSecret": {"name": "l2", "key": "url"},
        "privateKeySecret": {"name": "l2", "key": "key"}
    }}));
    assert!(rejection(&seq).contains("anchoring.enabled requires anchoring.chainId and anchoring.registryAddress"));
}

#[test]
fn a_pool_whose_minimum_exceeds_its_maximum_is_rejected() {
    let seq = sequencer(serde_json::json!({"database": {"pool": {"minConnections": 30, "maxConnections": 10}}}));
    assert!(rejection(&seq).contains("minConnections must not exceed"), "{}", rejection(&seq));
}

#[test]
fn a_sequencer_name_that_cannot_name_its_service_and_jobs_is_rejected() {
    let mut long = sequencer(serde_json::json!({}));
    long.metadata.name = Some("a".repeat(48));
    assert!(rejection(&long).contains("at most 47 characters"), "{}", rejection(&long));
    let mut dotted = sequencer(serde_json::json!({}));
    dotted.metadata.name = Some("ledger.v2".into());
    assert!(rejection(&dotted).contains("DNS-1035"), "{}", rejection(&dotted));
}

fn action(spec: Value) -> SequencerAction {
    let mut base = serde_json::json!({"sequencerRef": {"name": "ledger"}});
    merge(&mut base, spec);
    let mut action = SequencerAction::new("act", serde_json::from_value(base).unwrap());
    action.metadata.namespace = Some("payments".into());
    action
}

const UUID: &str = "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41";

#[test]
fn an_action_must_name_exactly_one_operation() {
    let none = action(serde_json::json!({}));
    assert!(rejection(&none).contains("set exactly one operation"));
    let two = action(serde_json::json!({
        "anchorRetry": {"batchId": UUID},
        "verifyStream": {"tenantId": UUID, "storeId": UUID}
    }));
    assert!(rejection(&two).contains("set exactly one"));
    assert_eq!(rejection(&action(serde_json::json!({"anchorRetry": {"batchId": UUID}}))), "");
}

#[test]
fn every_operation_alone_is_accepted_and_the_spec_names_it() {
    let operations = [
        ("PauseStream", serde_json::json!({"pauseStream": {"tenantId": UUID, "storeId": UUID, "reason": "gap"}})),
        ("ResumeStream", serde_json::json!({"resumeStream": {"tenantId": UUID, "storeId": UUID}})),
        ("CorrectCommitment", serde_json::json!({"correctCommitment": {"batchId": UUID, "reason": "bad root"}})),
        ("DeadLetterPurge", serde_json::json!({"deadLetterPurge": {"status": "resolved", "storeId": UUID}})),
        ("VacuumAnalyze", serde_json::json!({"vacuumAnalyze": {"tables": ["events", "ves_events"]}})),
        ("TerminateIdleConnections", serde_json::json!({"terminateIdleConnections": {"idleLongerThanSeconds": 600}})),
        ("VerifyStream", serde_json::json!({"verifyStream": {"tenantId": UUID, "storeId": UUID}})),
        (
            "VerifyStream",
            serde_json::json!({"verifyStream": {"tenantId": UUID, "storeId": UUID, "receiptKeys": ["ab".repeat(32)]}}),
        ),
    ];
    for (kind, spec) in operations {
        let action = action(spec);
        assert_eq!(rejection(&action), "", "{kind}");
        assert_eq!(schema_errors(&action), "", "{kind}");
        assert_eq!(action.spec.operation().unwrap().kind(), kind);
    }
    let two = action(serde_json::json!({"vacuumAnalyze": {}, "resumeStream": {"tenantId": UUID, "storeId": UUID}}));
    assert!(rejection(&two).contains("set exactly one operation"));
    assert!(two.spec.operation().is_err());
}

#[test]
fn pinned_receipt_keys_are_one_to_sixty_four_hex_ed25519_keys() {
    let verify = |keys: Value| {
        action(serde_json::json!({"verifyStream": {"tenantId": UUID, "storeId": UUID, "receiptKeys": keys}}))
    };
    let key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let errors = |keys: Value| schema_errors(&verify(keys));
    assert_eq!(errors(serde_json::json!([key, format!("0X{}", key.to_uppercase())])), "");
    // Distinct: the API server also refuses a repeated item of the set, which this check does not see.
    let many = |n: usize| serde_json::json!((0..n).map(|i| format!("{i:064x}")).collect::<Vec<_>>());
    assert_eq!(errors(many(64)), "", "64 is the most");
    for (keys, at) in [
        (serde_json::json!([]), "/spec/verifyStream/receiptKeys: "),
        (many(65), "/spec/verifyStream/receiptKeys: "),
        (serde_json::json!([key, "zz"]), "/spec/verifyStream/receiptKeys/1: "),
        (serde_json::json!([&key[2..]]), "/spec/verifyStream/receiptKeys/0: "),
        (serde_json::json!([format!("{key}00")]), "/spec/verifyStream/receiptKeys/0: "),
    ] {
        let errors = errors(keys.clone());
        assert!(errors.starts_with(at) && !errors.contains("; "), "{keys}: {errors}");
    }
    let stranger = action(serde_json::json!({"verifyStream": {"tenantId": "tenant-1", "storeId": UUID}}));
    assert!(schema_errors(&stranger).starts_with("/spec/verifyStream/tenantId: "), "{}", schema_errors(&stranger));
}

#[test]
fn a_finished_action_has_no_ttl_unless_one_is_set() {
    let action = action(serde_json::json!({"vacuumAnalyze": {}}));
    assert_eq!(action.spec.ttl_seconds_after_finished, None);
    assert!(serde_json::to_value(&action.spec).unwrap().get("ttlSecondsAfterFinished").is_none());
}

#[test]
fn a_dead_letter_replay_takes_ids_or_a_filter_but_not_both() {
    let both = action(serde_json::json!({"deadLetterReplay": {"ids": [UUID], "filter": {"reason": "x"}}}));
    assert!(rejection(&both).contains("deadLetterReplay needs exactly one of ids or filter"));
    let neither = action(serde_json::json!({"deadLetterReplay": {}}));
    assert!(rejection(&neither).contains("deadLetterReplay needs exactly one of ids or filter"));
    assert_eq!(rejection(&action(serde_json::json!({"deadLetterReplay": {"filter": {}}}))), "");
}

#[test]
fn an_actions_spec_cannot_change_but_its_status_can() {
    let before = action(serde_json::json!({"anchorRetry": {"batchId": UUID}}));
    let mut edited = before.clone();
    edited.spec.anchor_retry = Some(AnchorRetry { batch_id: "1b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41".into() });
    let error = validate_cel_update(&edited, &before).unwrap_err();
    assert!(format!("{error:?}").contains("spec is immutable"), "{error:?}");

    let mut progressed = before.clone();
    progressed.status = Some(SequencerActionStatus { phase: ActionPhase::Running, ..Default::default() });
    assert!(validate_cel_update(&progressed, &before).is_ok());
}

#[test]
fn spec_env_cannot_override_a_variable_the_operator_sets_from_a_secret() {
    let overriding = sequencer(serde_json::json!({"env": [{"name": "DATABASE_URL", "value": "postgres://elsewhere"}]}));
    assert!(rejection(&overriding).contains("spec.env must not set DATABASE_URL"), "{}", rejection(&overriding));
    let replica = sequencer(serde_json::json!({"env": [{"name": "READ_DATABASE_URL", "value": "postgres://replica"}]}));
    assert!(rejection(&replica).contains("READ_DATABASE_URL"), "{}", rejection(&replica));
    let lag = sequencer(serde_json::json!({"env": [{"name": "READ_REPLICA_MAX_LAG_MS", "value": "1000"}]}));
    assert!(validate_cel(&lag).is_ok(), "a non-secret setting may be overridden");
    let extra = sequencer(serde_json::json!({"env": [{"name": "COMMIT_INTERVAL_MS", "value": "250"}]}));
    assert!(validate_cel(&extra).is_ok());
}

#[test]
fn verify_full_without_a_ca_is_rejected() {
    let seq = sequencer(serde_json::json!({"database": {"tls": {"sslMode": "verify-full"}}}));
    assert!(rejection(&seq).contains("need database.tls.caSecret"), "{}", rejection(&seq));
}

#[test]
fn every_integer_of_both_crds_has_a_format_the_api_server_knows_and_bounds() {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&Value::from("integer")) {
                    let format = map.get("format").and_then(Value::as_str);
                    if !matches!(format, Some("int32" | "int64")) {
                        out.push(format!("{path}: format {format:?}"));
                    }
                }
                for (k, v) in map {
                    walk(v, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path, out)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for crd in all_crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&schema, &crd.spec.names.kind, &mut bad);
    }
    assert!(bad.is_empty(), "integers the API server does not know: {bad:#?}");
    let crds = serde_json::to_value(all_crds()).unwrap().to_string();
    assert!(!crds.contains("uint"), "no unsigned format is left");
    let spec = &serde_json::to_value(&all_crds()[0]).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["properties"];
    let poll = &spec["monitoring"]["properties"]["statusPollSeconds"];
    assert_eq!(
        (poll["format"].as_str(), poll["minimum"].as_f64(), poll["maximum"].as_f64()),
        (Some("int32"), Some(5.0), Some(3600.0))
    );
}

/// A well-formed cosignature/v1 verifier key (the CEL rule checks its shape; the sequencer its key id).
const WITNESS_KEY: &str = "witness.example/w+1a2b3c4d+BKsS2Xu9PIHbYUcA1nHIy2RfMCxXjtvO8Ih7wYhSAdlN";

#[test]
fn transparency_log_settings_with_witnesses_and_public_streams_pass_every_cel_rule() {
    let seq = sequencer(serde_json::json!({"transparencyLog": {
        "integrateIntervalMs": 100,
        "witnesses": [
            {"url": "https://witness.example/submit/", "key": WITNESS_KEY},
            {"url": "http://witness.internal:8080", "key": WITNESS_KEY.replacen("witness.example/w", "w2", 1)},
        ],
        "publicRead": [format!("{UUID}/{UUID}"), format!("{}/*", UUID.to_uppercase())],
    }}));
    assert_eq!(rejection(&seq), "");
    assert!(seq.spec.transparency_log.enabled, "on by default");
    assert!(sequencer(serde_json::json!({})).spec.transparency_log.enabled);
}

#[test]
fn a_witness_key_that_is_not_a_cosignature_vkey_is_rejected() {
    for key in [
        "witness.example/w",
        "witness.example/w+1a2b3c4d",
        "witness.example/w+1a2b3c+BKsS2Xu9PIHbYUcA1nHIy2RfMCxXjtvO8Ih7wYhSAdlN",
        // An Ed25519 note key (0x01), not a cosignature/v1 key (0x04).
        "witness.example/w+1a2b3c4d+AasS2Xu9PIHbYUcA1nHIy2RfMCxXjtvO8Ih7wYhSAdlN",
        "witness.example/w+1a2b3c4d+BKsS2Xu9PIHbYUcA1nHIy2RfMCxXjtvO8Ih7wYhSAdl",
        "witness example+1a2b3c4d+BKsS2Xu9PIHbYUcA1nHIy2RfMCxXjtvO8Ih7wYhSAdlN",
    ] {
        let seq = sequencer(serde_json::json!({"transparencyLog": {"witnesses": [
            {"url": "https://witness.example/", "key": key}
        ]}}));
        assert!(rejection(&seq).contains("must be a C2SP cosignature/v1 verifier key"), "{key}: {}", rejection(&seq));
    }
}

#[test]
fn a_witness_url_must_be_http_and_carry_no_credentials() {
    let with = |url: &str| {
        sequencer(serde_json::json!({"transparencyLog": {"witnesses": [{"url": url, "key": WITNESS_KEY}]}}))
    };
    for url in ["witness.example/submit", "ftp://witness.example/", "https:// witness.example/"] {
        assert!(
            rejection(&with(url)).contains("must be an http:// or https:// URL"),
            "{url}: {}",
            rejection(&with(url))
        );
    }
    let secret = with("https://user:token@witness.example/submit");
    assert!(rejection(&secret).contains("must not carry credentials"), "{}", rejection(&secret));
    assert_eq!(rejection(&with("https://witness.example/submit?for=ledger@example")), "");
}

#[test]
fn a_public_read_entry_that_names_no_stream_is_rejected() {
    for entry in [
        UUID.to_string(),
        format!("*/{UUID}"),
        "*/*".to_string(),
        format!("{UUID}/store-1"),
        format!("{UUID}/{UUID}/x"),
        format!("{}/*", UUID.replace('-', "")),
        format!(" {UUID}/*"),
    ] {
        let seq = sequencer(serde_json::json!({"transparencyLog": {"publicRead": [entry]}}));
        assert!(
            rejection(&seq).contains("publicRead entries must be <tenant UUID>/<store UUID> or <tenant UUID>/*"),
            "{entry}: {}",
            rejection(&seq)
        );
    }
}

#[test]
fn the_transparency_log_lists_are_bounded_and_typed_for_server_side_apply() {
    let schema = schema_of::<Sequencer>();
    let tlog = &schema["properties"]["spec"]["properties"]["transparencyLog"]["properties"];
    assert_eq!(tlog["enabled"]["default"], true);
    assert_eq!(tlog["publicRead"]["x-kubernetes-list-type"], "set");
    assert_eq!(tlog["publicRead"]["maxItems"], 256);
    assert_eq!(tlog["publicRead"]["items"]["maxLength"], 73);
    assert_eq!(tlog["witnesses"]["x-kubernetes-list-type"], "map");
    assert_eq!(tlog["witnesses"]["x-kubernetes-list-map-keys"], serde_json::json!(["key"]));
    assert_eq!(tlog["witnesses"]["items"]["properties"]["key"]["maxLength"], 256);
}
