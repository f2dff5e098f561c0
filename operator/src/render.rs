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
    let error = |reason: String| Error::Manifest {
        path: path.to_string(),
        reason,
    };
    let mut out = String::new();
    let mut rendered = 0;
    for (index, document) in yaml_serde::Deserializer::from_str(manifest).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| error(format!("document {}: {e}", index + 1)))?;
        if value.is_null() {
            continue;
        }
        let is_sequencer = value["kind"] == "Sequencer"
            && value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("{}/", crate::labels::API_GROUP)));
        if !is_sequencer {
            continue;
        }
        let seq: Sequencer = serde_json::from_value(value).map_err(|e| {
            error(format!(
                "document {}: not a valid Sequencer: {e}",
                index + 1
            ))
        })?;
        let with_job = seq.spec.migrations.mode == MigrationsMode::Job;
        let children = resources::children(&seq, Some(&seq.spec.image), with_job);
        out.push_str(&format!(
            "# Objects the operator applies for Sequencer {} (field manager {}).\n",
            kube::ResourceExt::name_any(&seq),
            crate::labels::FIELD_MANAGER
        ));
        for object in children.to_values() {
            out.push_str("---\n");
            out.push_str(&yaml_serde::to_string(&object).map_err(|e| error(e.to_string()))?);
        }
        rendered += 1;
    }
    if rendered == 0 {
        return Err(error(format!(
            "no Sequencer ({}/v1alpha1) in the manifest",
            crate::labels::API_GROUP
        )));
    }
    Ok(out)
}
