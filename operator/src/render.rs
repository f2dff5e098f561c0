//! `sequencer-operator render`: every object the operator would apply for the `Sequencer`s of a
//! manifest, offline, for review in GitOps pull requests.
//!
//! It renders the target state of a fresh rollout: the Deployment on `spec.image` and, in Job
//! mode, the migration Job of that image. Other documents of the manifest are skipped.

use serde::Deserialize;

use crate::crd::{MigrationsMode, Sequencer};
use crate::resources;
use crate::{Error, Result};

/// The YAML stream of every object the operator applies for the Sequencers in `manifest`.
pub fn render(manifest: &str, path: &str) -> Result<String> {
    let error = |reason: String| Error::Manifest { path: path.to_string(), reason };
    let mut out = String::new();
    let mut rendered = 0;
    for (index, document) in yaml_serde::Deserializer::from_str(manifest).enumerate() {
        let value =
            serde_json::Value::deserialize(document).map_err(|e| error(format!("document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        let is_sequencer = value["kind"] == "Sequencer"
            && value["apiVersion"].as_str().is_some_and(|v| v.starts_with(&format!("{}/", crate::labels::API_GROUP)));
        if !is_sequencer {
            continue;
        }
        let seq: Sequencer = serde_json::from_value(value)
            .map_err(|e| error(format!("document {}: not a valid Sequencer: {e}", index + 1)))?;
        let with_job = seq.spec.migrations.mode == MigrationsMode::Job;
        let children = resources::children(&seq, Some(&seq.spec.image), with_job);
        out.push_str(&format!(
            "# Objects the operator applies for Sequencer {} (field manager {}).\n",
            kube::ResourceExt::name_any(&seq),
            crate::labels::FIELD_MANAGER
        ));
        for object in children.to_values() {
            out.push_str("---\n");
            write_yaml(&mut out, &object, 0);
        }
        rendered += 1;
    }
    if rendered == 0 {
        return Err(error(format!("no Sequencer ({}/v1alpha1) in the manifest", crate::labels::API_GROUP)));
    }
    Ok(out)
}

/// Writes `value` as block YAML with every string double-quoted.
///
/// NB: not `yaml_serde::to_string`: it leaves strings such as a 160-bit `0x…` registry address
/// unquoted (they overflow its integer check), and YAML 1.1 readers such as kubectl's then read a
/// number. A double-quoted JSON string is a valid YAML scalar and is never anything but a string.
fn write_yaml(out: &mut String, value: &serde_json::Value, indent: usize) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                write_nested(out, item, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    // `- first: …` with the other keys aligned under `first`.
                    Value::Object(map) if !map.is_empty() => {
                        let mut block = String::new();
                        write_yaml(&mut block, item, indent + 2);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&block[indent + 2..]);
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push('-');
                        write_nested(out, item, indent);
                    }
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

/// The value after `key:` or `-`: inline when scalar or empty, else on the following lines.
fn write_nested(out: &mut String, value: &serde_json::Value, indent: usize) {
    use serde_json::Value;
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(out, value, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(out, value, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

/// A mapping key: plain when it cannot be read as anything but a string, else double-quoted.
fn yaml_key(key: &str) -> String {
    const WORDS: [&str; 12] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<", ""];
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        && !WORDS.contains(&key.to_ascii_lowercase().as_str());
    if plain { key.to_string() } else { serde_json::Value::String(key.to_string()).to_string() }
}

#[cfg(test)]
mod tests {
    //! `render`, and the example manifests in `operator/examples/`.

    use kube::core::cel::validate_cel;
    use serde_json::Value;

    use super::*;
    use crate::crd::SequencerAction;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

    fn examples() -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(EXAMPLES)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).unwrap()))
            .collect();
        files.sort();
        files
    }

    /// Fields of `given` that `parsed` dropped: a typo in an example would vanish silently.
    fn dropped(given: &Value, parsed: &Value, path: &str, out: &mut Vec<String>) {
        match (given, parsed) {
            (Value::Object(given), Value::Object(parsed)) => {
                for (key, value) in given {
                    match parsed.get(key) {
                        Some(kept) => dropped(value, kept, &format!("{path}.{key}"), out),
                        None => out.push(format!("{path}.{key}")),
                    }
                }
            }
            (Value::Array(given), Value::Array(parsed)) => {
                for (i, (g, p)) in given.iter().zip(parsed).enumerate() {
                    dropped(g, p, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    fn check<K>(path: &str, value: Value)
    where
        K: kube::CustomResourceExt + serde::Serialize + serde::de::DeserializeOwned,
    {
        let object: K = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut lost = Vec::new();
        dropped(&value, &serde_json::to_value(&object).unwrap(), "", &mut lost);
        assert!(lost.is_empty(), "{path}: unknown fields {lost:?}");
        if let Err(errors) = validate_cel(&object) {
            panic!("{path}: rejected by the CRD's CEL rules: {errors:?}");
        }
        let errors = crate::crd::schema_errors(&object);
        assert!(errors.is_empty(), "{path}: rejected by the CRD's schema: {errors}");
    }

    #[test]
    fn every_example_manifest_is_a_valid_sequencer_or_action() {
        let examples = examples();
        assert!(examples.len() >= 4, "expected the example manifests in {EXAMPLES}");
        let mut kinds = Vec::new();
        for (path, text) in examples {
            for document in yaml_serde::Deserializer::from_str(&text) {
                let value = Value::deserialize(document).unwrap();
                let kind = value["kind"].as_str().unwrap_or_default().to_string();
                match kind.as_str() {
                    "Sequencer" => check::<Sequencer>(&path, value),
                    "SequencerAction" => check::<SequencerAction>(&path, value),
                    other => panic!("{path}: unexpected kind {other:?}"),
                }
                kinds.push(kind);
            }
        }
        assert!(kinds.iter().any(|k| k == "Sequencer"));
        assert!(kinds.iter().any(|k| k == "SequencerAction"));
    }

    #[test]
    fn rendering_the_example_lists_every_child_in_apply_order() {
        let path = format!("{EXAMPLES}/sequencer.yaml");
        let rendered = render(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        let kinds: Vec<String> = yaml_serde::Deserializer::from_str(&rendered)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .map(|v| v["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, vec!["ServiceAccount", "ConfigMap", "Service", "PodDisruptionBudget", "Job", "Deployment"]);
        assert!(rendered.contains("namespace: \"payments\""));
    }

    #[test]
    fn the_example_sequencers_transparency_log_settings_are_what_the_sequencer_accepts() {
        let path = format!("{EXAMPLES}/sequencer.yaml");
        let seq: Sequencer = yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let config = resources::config_map(&seq).data.unwrap();
        // NB: the sequencer checks what the CRD cannot, such as each witness key's id.
        let tlog = sequencer::tlog::TlogConfig::from_vars(|k| config.get(k).cloned())
            .unwrap_or_else(|(var, reason)| panic!("{path}: {var}: {reason}"));
        assert_eq!(tlog.witnesses.len(), seq.spec.transparency_log.witnesses.len());
    }

    #[test]
    fn rendering_fills_defaults_like_the_api_server_would() {
        let manifest = r#"
apiVersion: sequencer.stateset.io/v1alpha1
kind: Sequencer
metadata: {name: tiny}
spec:
  database: {urlSecret: {name: db, key: url}}
  auth: {adminApiKeySecret: {name: admin, key: key}}
  receiptSigningKeySecret: {name: signing, key: seed}
"#;
        let rendered = render(manifest, "inline").unwrap();
        assert!(rendered.contains("MAX_DB_CONNECTIONS: \"20\""), "{rendered}");
        assert!(rendered.contains(crate::crd::DEFAULT_IMAGE));
        assert!(!rendered.contains("kind: PodDisruptionBudget"));
    }

    #[test]
    fn rendered_yaml_reads_back_as_the_same_objects_with_strings_kept_strings() {
        let object = serde_json::json!({
            "data": {"SET_REGISTRY_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "PORT": "8080",
                     "yes": "no", "multi": "a\nb: c", "empty": ""},
            "list": [1, true, null, {"a": []}, [], {}],
            "nested": {"x": {"y": [{"z": "1e3"}]}}
        });
        let mut out = String::new();
        write_yaml(&mut out, &object, 0);
        let back: Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(back, object, "{out}");
        assert!(out.contains("SET_REGISTRY_ADDRESS: \"0x5FbD"), "{out}");
    }

    #[test]
    fn a_manifest_without_a_sequencer_is_an_error_naming_the_file() {
        let error = render("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "cm.yaml").unwrap_err();
        assert!(error.to_string().starts_with("cm.yaml: no Sequencer"), "{error}");
    }

    #[test]
    fn an_invalid_sequencer_is_an_error_naming_the_document() {
        let manifest =
            "apiVersion: sequencer.stateset.io/v1alpha1\nkind: Sequencer\nmetadata: {name: x}\nspec: {replicas: two}\n";
        let error = render(manifest, "bad.yaml").unwrap_err();
        assert!(error.to_string().contains("document 1: not a valid Sequencer"), "{error}");
    }
}
