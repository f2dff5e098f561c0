//! The desired-state builders, as plain functions over a `Sequencer`.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use kube::ResourceExt;
use serde_json::Value;

use super::*;
use crate::crd::{MigrationsMode, TenantRateLimit};

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
