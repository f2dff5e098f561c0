//! The desired-state builders, as plain functions over a `Sequencer`.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use kube::ResourceExt;
use serde_json::Value;

use super::*;
use crate::crd::{MigrationsMode, TenantRateLimit, WitnessSpec};
use crate::fixtures::{BATCH_ID, STORE_ID, TENANT_ID};

fn pod(children: &Children) -> &PodSpec {
    children.deployment.as_ref().unwrap().spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container(children: &Children) -> &Container {
    &pod(children).containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.as_ref()?.iter().find(|e| e.name == name)
}

fn all_children(seq: &Sequencer) -> Children {
    children(seq, Some(&seq.spec.image), true)
}

#[test]
fn secrets_reach_the_pod_only_through_secret_key_refs() {
    let seq = Sequencer::test().anchoring();
    let children = all_children(&seq);
    let c = container(&children);
    for (name, secret, key) in [
        ("DATABASE_URL", "ledger-db", "url"),
        ("BOOTSTRAP_ADMIN_API_KEY", "ledger-admin", "key"),
        ("VES_SEQUENCER_SIGNING_KEY", "ledger-signing", "seed"),
        ("L2_RPC_URL", "ledger-l2", "rpc-url"),
        ("SEQUENCER_PRIVATE_KEY", "ledger-l2", "private-key"),
    ] {
        let var = env(c, name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(var.value, None, "{name} must not carry a literal value");
        let selector = var.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((selector.name.as_str(), selector.key.as_str()), (secret, key));
    }
    let config = children.config_map.data.as_ref().unwrap();
    for secret_var in
        ["DATABASE_URL", "BOOTSTRAP_ADMIN_API_KEY", "VES_SEQUENCER_SIGNING_KEY", "L2_RPC_URL", "SEQUENCER_PRIVATE_KEY"]
    {
        assert!(!config.contains_key(secret_var), "{secret_var} must not be in the ConfigMap");
    }
}

fn read_replica(max_lag_ms: Option<u32>) -> crate::crd::ReadReplicaSpec {
    crate::crd::ReadReplicaSpec {
        url_secret: crate::crd::SecretKeyRef::new("ledger-db-replica", "url"),
        max_lag_ms,
        check_interval_ms: None,
    }
}

#[test]
fn the_read_replica_url_reaches_the_pods_only_from_its_secret_and_its_lag_bound_through_the_config_map() {
    let none = all_children(&Sequencer::test());
    assert!(env(container(&none), "READ_DATABASE_URL").is_none(), "no replica, no variable");
    assert!(!none.config_map.data.as_ref().unwrap().keys().any(|k| k.starts_with("READ_")));

    let mut seq = Sequencer::test();
    seq.spec.database.read_replica = Some(read_replica(Some(2500)));
    let children = all_children(&seq);
    let var = env(container(&children), "READ_DATABASE_URL").expect("READ_DATABASE_URL");
    assert_eq!(var.value, None, "READ_DATABASE_URL must not carry a literal value");
    let selector = var.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((selector.name.as_str(), selector.key.as_str()), ("ledger-db-replica", "url"));
    let config = children.config_map.data.as_ref().unwrap();
    assert!(!config.contains_key("READ_DATABASE_URL"), "the URL must not be in the ConfigMap");
    assert_eq!(config["READ_REPLICA_MAX_LAG_MS"], "2500");
    assert!(!config.contains_key("READ_REPLICA_CHECK_INTERVAL_MS"), "unset: the sequencer's default");
    // Migrations run on the primary only.
    let job = children.migration_job.as_ref().expect("a migration Job");
    let job_container = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert!(env(job_container, "READ_DATABASE_URL").is_none());
    assert!(seq.referenced_secrets().contains("ledger-db-replica"), "rotating it rolls the pods");
}

#[test]
fn anchoring_settings_are_configured_only_when_anchoring_is_enabled() {
    let off = all_children(&Sequencer::test());
    assert!(env(container(&off), "L2_RPC_URL").is_none());
    assert!(!off.config_map.data.as_ref().unwrap().contains_key("L2_CHAIN_ID"));

    let on = all_children(&Sequencer::test().anchoring());
    let config = on.config_map.data.as_ref().unwrap();
    assert_eq!(config["L2_CHAIN_ID"], "84532");
    assert_eq!(config["SET_REGISTRY_ADDRESS"], "0x5FbDB2315678afecb367f032d93F642f64180aa3");
    assert_eq!(config["ANCHOR_INTERVAL_SECS"], "60");
}

#[test]
fn the_config_map_carries_pool_sizes_rate_limits_and_logging() {
    let mut seq = Sequencer::test().with_rate_limit(1200);
    seq.spec.rate_limits.tenant_overrides = vec![
        TenantRateLimit { tenant_id: "ffffffff-0000-4000-8000-000000000000".into(), per_minute: 10 },
        TenantRateLimit { tenant_id: "00000000-0000-4000-8000-000000000000".into(), per_minute: 5000 },
    ];
    seq.spec.ingest.max_events_per_batch = Some(500);
    let config = config_map(&seq).data.unwrap();
    assert_eq!(config["MAX_DB_CONNECTIONS"], "20");
    assert_eq!(config["MIN_DB_CONNECTIONS"], "2");
    assert_eq!(config["DB_ACQUIRE_TIMEOUT_MS"], "5000");
    assert_eq!(config["RATE_LIMIT_PER_MINUTE"], "1200");
    assert_eq!(
        config["RATE_LIMIT_TENANT_OVERRIDES"],
        r#"{"00000000-0000-4000-8000-000000000000":5000,"ffffffff-0000-4000-8000-000000000000":10}"#
    );
    assert_eq!(config["MAX_EVENTS_PER_BATCH"], "500");
    assert_eq!(config["LOG_FORMAT"], "json");
    assert_eq!(config["RUST_LOG"], "info");
    assert_eq!(config["HOST"], "0.0.0.0");
    assert_eq!(config["PORT"], "8080");
}

#[test]
fn only_on_startup_mode_lets_the_pods_migrate() {
    for (mode, expected) in
        [(MigrationsMode::Job, "false"), (MigrationsMode::OnStartup, "true"), (MigrationsMode::Disabled, "false")]
    {
        let config = config_map(&Sequencer::test().with_migrations(mode)).data.unwrap();
        assert_eq!(config["DB_MIGRATE_ON_STARTUP"], expected, "{mode:?}");
    }
}

#[test]
fn a_configuration_change_changes_the_pod_template_hash_but_a_replica_change_does_not() {
    let hash_of = |seq: &Sequencer| {
        let children = all_children(seq);
        let template = &children.deployment.unwrap().spec.unwrap().template;
        template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[crate::labels::ANNOTATION_CONFIG_HASH].clone()
    };
    let base = hash_of(&Sequencer::test());
    assert_eq!(base, hash_of(&Sequencer::test()));
    assert_ne!(base, hash_of(&Sequencer::test().with_rate_limit(10)));
    assert_eq!(base, hash_of(&Sequencer::test().with_replicas(5)));
}

#[test]
fn every_child_is_owned_by_the_sequencer_and_labelled_as_managed_by_the_operator() {
    let seq = Sequencer::test().with_replicas(3);
    for object in all_children(&seq).to_values() {
        let kind = object["kind"].as_str().unwrap().to_string();
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Sequencer", "{kind}");
        assert_eq!(owner["name"], "ledger", "{kind}");
        assert_eq!(owner["uid"], seq.uid().unwrap(), "{kind}");
        assert_eq!(owner["controller"], true, "{kind}");
        assert_eq!(owner["blockOwnerDeletion"], true, "{kind}");
        assert_eq!(object["metadata"]["labels"][LABEL_MANAGED_BY], OPERATOR_NAME, "{kind}");
        assert_eq!(object["metadata"]["namespace"], "payments", "{kind}");
    }
}

#[test]
fn a_pod_disruption_budget_exists_only_with_more_than_one_replica() {
    assert!(pod_disruption_budget(&Sequencer::test().with_replicas(1)).is_none());
    assert!(pod_disruption_budget(&Sequencer::test().with_replicas(0)).is_none());
    let pdb = pod_disruption_budget(&Sequencer::test().with_replicas(3)).unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn the_service_selects_server_pods_and_never_migration_pods() {
    let seq = Sequencer::test();
    let children = all_children(&seq);
    let selector = children.service.spec.unwrap().selector.unwrap();
    let job_pod_labels = children.migration_job.unwrap().spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let server_pod_labels = children.deployment.unwrap().spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let selects =
        |labels: &std::collections::BTreeMap<String, String>| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(selects(&server_pod_labels));
    assert!(!selects(&job_pod_labels));
}

#[test]
fn the_migration_job_runs_the_admin_cli_with_only_the_database_url_secret() {
    let seq = Sequencer::test();
    let job = migration_job(&seq);
    let spec = job.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.command.as_ref().unwrap(), &vec!["stateset-sequencer-admin".to_string(), "migrate".to_string()]);
    assert_eq!(c.image.as_deref(), Some(seq.spec.image.as_str()));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let secret_vars: Vec<&str> =
        c.env.iter().flatten().filter(|e| e.value_from.is_some()).map(|e| e.name.as_str()).collect();
    assert_eq!(secret_vars, vec!["DATABASE_URL"]);
    assert_eq!(migration_job_image(&job).as_deref(), Some(seq.spec.image.as_str()));
}

#[test]
fn migration_job_names_are_one_per_image_and_fit_in_63_characters() {
    let longest = "a".repeat(47);
    let names = Names(&longest);
    let a = names.migration_job("ghcr.io/stateset/stateset-sequencer:0.1.0");
    let b = names.migration_job("ghcr.io/stateset/stateset-sequencer:0.2.0");
    assert_ne!(a, b);
    assert_eq!(a, names.migration_job("ghcr.io/stateset/stateset-sequencer:0.1.0"));
    assert!(a.len() <= 63, "{a} has {} characters", a.len());
}

#[test]
fn pods_run_as_non_root_on_a_read_only_root_without_a_service_account_token() {
    let children = all_children(&Sequencer::test());
    let pod = pod(&children);
    let c = container(&children);
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(children.service_account.automount_service_account_token, Some(false));
}

#[test]
fn probes_use_health_for_liveness_and_ready_for_readiness() {
    let children = all_children(&Sequencer::test());
    let c = container(&children);
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
    };
    assert_eq!(path(&c.liveness_probe), "/health");
    assert_eq!(path(&c.readiness_probe), "/ready");
    assert_eq!(path(&c.startup_probe), "/health");
}

#[test]
fn unset_resources_get_modest_requests_and_set_ones_are_used_verbatim() {
    let default = all_children(&Sequencer::test());
    let requests = container(&default).resources.as_ref().unwrap().requests.clone().unwrap();
    assert_eq!(requests["cpu"].0, "100m");

    let mut seq = Sequencer::test();
    let custom: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_value(serde_json::json!({"limits": {"memory": "1Gi"}})).unwrap();
    seq.spec.resources = Some(custom.clone());
    assert_eq!(container(&all_children(&seq)).resources.as_ref(), Some(&custom));
}

#[test]
fn the_deployment_is_absent_until_an_image_may_run_and_the_job_only_when_asked() {
    let seq = Sequencer::test();
    let held = children(&seq, None, true);
    assert!(held.deployment.is_none());
    assert!(held.migration_job.is_some());
    let running = children(&seq, Some("old:1"), false);
    assert_eq!(container(&running).image.as_deref(), Some("old:1"));
    assert!(running.migration_job.is_none());
}

#[test]
fn a_sequencer_never_stored_renders_with_a_placeholder_owner_uid() {
    let mut seq = Sequencer::test();
    seq.metadata.uid = None;
    let value: Value = serde_json::to_value(service(&seq)).unwrap();
    assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], UNASSIGNED_UID);
}

/// `seq` with every kind of referenced Secret: anchoring, a database CA, a read replica and a
/// `spec.env` secret.
fn with_every_secret() -> Sequencer {
    let mut seq = Sequencer::test().anchoring();
    seq.spec.database.tls = Some(crate::crd::DatabaseTlsSpec {
        ssl_mode: crate::crd::SslMode::VerifyFull,
        ca_secret: Some(crate::crd::SecretKeyRef::new("ledger-db-ca", "ca.crt")),
    });
    seq.spec.database.read_replica = Some(read_replica(None));
    seq.spec.env = vec![
        serde_json::from_value(serde_json::json!({
            "name": "JWT_SECRET", "valueFrom": {"secretKeyRef": {"name": "ledger-jwt", "key": "secret"}}
        }))
        .unwrap(),
    ];
    seq
}

#[test]
fn rotating_any_referenced_secret_changes_the_pod_template_secrets_hash() {
    let seq = with_every_secret();
    let references = seq.referenced_secret_keys();
    assert_eq!(
        references.iter().map(|r| format!("{}/{}", r.name, r.key)).collect::<Vec<_>>(),
        vec![
            "ledger-db/url",
            "ledger-admin/key",
            "ledger-signing/seed",
            "ledger-l2/rpc-url",
            "ledger-l2/private-key",
            "ledger-db-ca/ca.crt",
            "ledger-db-replica/url",
            "ledger-jwt/secret"
        ]
    );
    let value = |r: &crate::crd::SecretKeyRef| Some(format!("{}-v1", r.key).into_bytes());
    let before = secrets_hash(&seq, value);
    assert_eq!(before, secrets_hash(&seq, value), "the hash is stable");
    for rotated in &references {
        let after =
            secrets_hash(&seq, |r| if r == rotated { Some(format!("{}-v2", r.key).into_bytes()) } else { value(r) });
        assert_ne!(before, after, "rotating {}/{} must roll the pods", rotated.name, rotated.key);
        let removed = secrets_hash(&seq, |r| if r == rotated { None } else { value(r) });
        assert_ne!(before, removed, "removing {}/{} must change the hash", rotated.name, rotated.key);
    }
    assert!(!before.contains("v1"), "the hash reveals no value");
}

#[test]
fn the_secrets_hash_is_stamped_on_the_pod_template_only() {
    let seq = Sequencer::test();
    let mut children = all_children(&seq);
    let deployment = children.deployment.as_mut().unwrap();
    stamp_secrets_hash(deployment, "abc");
    let annotations =
        deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(annotations[crate::labels::ANNOTATION_SECRETS_HASH], "abc");
    assert!(deployment.metadata.annotations.is_none());
}

#[test]
fn the_sequencer_id_is_the_sequencers_uid_unless_set_and_the_origin_names_namespace_and_name() {
    let seq = Sequencer::test();
    let config = config_map(&seq).data.unwrap();
    assert_eq!(config["VES_SEQUENCER_ID"], seq.uid().unwrap());
    assert_eq!(config["VES_CHECKPOINT_ORIGIN"], "stateset-sequencer/payments/ledger");
    assert!(!config["VES_CHECKPOINT_ORIGIN"].contains(' ') && !config["VES_CHECKPOINT_ORIGIN"].contains('+'));

    let mut seq = Sequencer::test();
    seq.spec.identity.sequencer_id = Some("11111111-2222-4333-8444-555555555555".into());
    seq.spec.identity.checkpoint_origin = Some("ledger.example.com/sequencer".into());
    let config = config_map(&seq).data.unwrap();
    assert_eq!(config["VES_SEQUENCER_ID"], "11111111-2222-4333-8444-555555555555");
    assert_eq!(config["VES_CHECKPOINT_ORIGIN"], "ledger.example.com/sequencer");
}

#[test]
fn database_tls_mounts_the_ca_and_sets_sslmode_in_the_pods_and_the_migration_job() {
    let seq = with_every_secret();
    let children = all_children(&seq);
    let job = children.migration_job.clone().unwrap();
    let job_pod = job.spec.unwrap().template.spec.unwrap();
    for (what, pod) in [("Deployment", pod(&children).clone()), ("migration Job", job_pod)] {
        let c = &pod.containers[0];
        assert_eq!(env(c, "PGSSLMODE").and_then(|e| e.value.as_deref()), Some("verify-full"), "{what}");
        assert_eq!(
            env(c, "PGSSLROOTCERT").and_then(|e| e.value.as_deref()),
            Some("/etc/stateset/db-ca/ca.crt"),
            "{what}"
        );
        let mount = c.volume_mounts.iter().flatten().find(|m| m.mount_path == "/etc/stateset/db-ca").expect(what);
        assert_eq!(mount.read_only, Some(true), "{what}");
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("ledger-db-ca"), "{what}");
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "ca.crt");
    }
    let plain = all_children(&Sequencer::test());
    assert!(env(container(&plain), "PGSSLMODE").is_none(), "the default set-up is unchanged");
}

#[test]
fn session_timeouts_reach_the_config_map_only_when_set() {
    let mut seq = Sequencer::test();
    assert!(!config_map(&seq).data.unwrap().contains_key("DB_STATEMENT_TIMEOUT_MS"));
    seq.spec.database.timeouts.statement_timeout_ms = Some(30000);
    seq.spec.database.timeouts.lock_timeout_ms = Some(5000);
    seq.spec.database.timeouts.idle_in_transaction_timeout_ms = Some(60000);
    let config = config_map(&seq).data.unwrap();
    assert_eq!(config["DB_STATEMENT_TIMEOUT_MS"], "30000");
    assert_eq!(config["DB_LOCK_TIMEOUT_MS"], "5000");
    assert_eq!(config["DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"], "60000");
}

/// A witness verifier key as C2SP tlog-cosignature defines it: `<name>+<key id>+<base64(0x04 || key)>`.
fn witness_vkey(name: &str, seed: u8) -> String {
    use sha2::{Digest, Sha256};
    // NB: standard base64 by hand, so that the operator does not depend on a base64 crate for one test.
    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                let c = if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' };
                out.push(c as char);
            }
        }
        out
    }
    let mut key = vec![0x04];
    key.extend_from_slice(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes());
    let id = Sha256::new().chain_update(name).chain_update("\n").chain_update(&key).finalize();
    format!("{name}+{}+{}", hex::encode(&id[..4]), encode(&key))
}

#[test]
fn the_transparency_log_is_on_by_default_with_the_sequencers_own_settings() {
    let config = config_map(&Sequencer::test()).data.unwrap();
    assert_eq!(config["TLOG_ENABLED"], "true");
    let tlog: Vec<&String> = config.keys().filter(|k| k.starts_with("TLOG_")).collect();
    assert_eq!(tlog, ["TLOG_ENABLED"], "nothing else unless the spec sets it");
}

#[test]
fn transparency_log_settings_reach_the_config_map_as_the_sequencer_parses_them() {
    let mut seq = Sequencer::test();
    let tlog = &mut seq.spec.transparency_log;
    tlog.enabled = false;
    tlog.integrate_interval_ms = Some(50);
    tlog.integrate_max_events = Some(1000);
    tlog.witness_interval_ms = Some(2000);
    tlog.witness_timeout_ms = Some(3000);
    tlog.witnesses = vec![
        WitnessSpec { url: "https://w1.example/submit/".into(), key: witness_vkey("w1.example/w", 1) },
        WitnessSpec { url: "http://w2.internal:8080".into(), key: witness_vkey("w2.internal", 2) },
    ];
    tlog.public_read = vec![format!("{TENANT_ID}/{STORE_ID}"), "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41/*".into()];
    tlog.public_read_rate_per_second = Some(0);
    let config = config_map(&seq).data.unwrap();
    assert_eq!(config["TLOG_ENABLED"], "false");
    assert_eq!(config["TLOG_INTEGRATE_INTERVAL_MS"], "50");
    assert_eq!(config["TLOG_INTEGRATE_MAX_EVENTS"], "1000");
    assert_eq!(config["TLOG_WITNESS_INTERVAL_MS"], "2000");
    assert_eq!(config["TLOG_WITNESS_TIMEOUT_MS"], "3000");
    assert_eq!(
        serde_json::from_str::<Value>(&config["TLOG_WITNESSES"]).unwrap(),
        serde_json::json!([
            {"url": "https://w1.example/submit/", "key": witness_vkey("w1.example/w", 1)},
            {"url": "http://w2.internal:8080", "key": witness_vkey("w2.internal", 2)},
        ])
    );
    assert_eq!(config["TLOG_PUBLIC_READ"], format!("{TENANT_ID}/{STORE_ID},0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41/*"));
    assert_eq!(config["TLOG_PUBLIC_READ_RATE_PER_SECOND"], "0");

    // The sequencer's own parser accepts exactly what was rendered.
    let parsed = sequencer::tlog::TlogConfig::from_vars(|k| config.get(k).cloned()).expect("the sequencer accepts it");
    assert!(!parsed.enabled);
    assert_eq!(parsed.integrate_interval, std::time::Duration::from_millis(50));
    assert_eq!(parsed.integrate_max_events, 1000);
    assert_eq!(parsed.witness_interval, std::time::Duration::from_millis(2000));
    assert_eq!(parsed.witness_timeout, std::time::Duration::from_millis(3000));
    assert_eq!(parsed.witnesses.len(), 2);
    assert_eq!(parsed.witnesses[1].key, witness_vkey("w2.internal", 2));
    let stream = |tenant: &str, store: &str| sequencer::store::events::StreamKey {
        tenant_id: tenant.parse().unwrap(),
        store_id: store.parse().unwrap(),
    };
    assert!(parsed.public_read.covers(stream(TENANT_ID, STORE_ID)));
    assert!(parsed.public_read.covers(stream("0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41", STORE_ID)));
    assert!(!parsed.public_read.covers(stream(TENANT_ID, BATCH_ID)), "only the listed store of that tenant");
    assert_eq!(parsed.public_read_per_second, None, "0 lifts the anonymous read limit");
}

#[test]
fn spec_env_pod_metadata_and_service_account_annotations_reach_their_objects() {
    let mut seq = with_every_secret();
    seq.spec.pod.labels =
        [("team".to_string(), "ledger".to_string()), (LABEL_INSTANCE.to_string(), "spoof".to_string())].into();
    seq.spec.pod.annotations = [("sidecar.istio.io/inject".to_string(), "true".to_string())].into();
    seq.spec.service_account.annotations =
        [("eks.amazonaws.com/role-arn".to_string(), "arn:aws:iam::1:role/ledger".to_string())].into();
    let children = all_children(&seq);
    let template = children.deployment.as_ref().unwrap().spec.as_ref().unwrap().template.metadata.clone().unwrap();
    let labels = template.labels.unwrap();
    assert_eq!(labels["team"], "ledger");
    assert_eq!(labels[LABEL_INSTANCE], "ledger", "the operator's own labels win");
    assert_eq!(template.annotations.unwrap()["sidecar.istio.io/inject"], "true");
    let env_names: Vec<&str> = container(&children).env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env_names.last(), Some(&"JWT_SECRET"), "spec.env comes last, overriding the ConfigMap");
    assert_eq!(
        children.service_account.metadata.annotations.unwrap()["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/ledger"
    );
    let job_labels = children.migration_job.unwrap().spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(job_labels["team"], "ledger");
}
