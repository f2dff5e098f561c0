//! The migration Job: `stateset-sequencer-admin migrate` with the image about to be rolled out.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use kube::ResourceExt;

use super::deployment::{
    container_security_context, database_tls_env, pod_metadata, pod_spec, resources, volume_mounts,
};
use super::{Names, child_meta, plain_env, secret_env};
use crate::crd::Sequencer;
use crate::labels::*;

/// The migration Job of `seq`'s `spec.image`. Its name derives from the image, so each image is
/// migrated once and a finished Job records the outcome for that image.
pub fn migration_job(seq: &Sequencer) -> Job {
    let spec = &seq.spec;
    let image = spec.image.as_str();
    let mut metadata = child_meta(seq, Names(&seq.name_any()).migration_job(image), COMPONENT_MIGRATIONS);
    metadata.annotations = Some(BTreeMap::from([(ANNOTATION_MIGRATION_IMAGE.to_string(), image.to_string())]));

    let container = Container {
        name: CONTAINER_MIGRATE.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_string()),
        command: Some(vec!["stateset-sequencer-admin".to_string(), "migrate".to_string()]),
        env: Some(
            [
                secret_env("DATABASE_URL", &spec.database.url_secret),
                plain_env("LOG_FORMAT", spec.logging.format.as_str()),
                plain_env("RUST_LOG", spec.logging.level.clone()),
            ]
            .into_iter()
            .chain(database_tls_env(seq))
            .collect(),
        ),
        resources: Some(resources(seq)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts(seq)),
        ..Default::default()
    };

    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.migrations.backoff_limit),
            active_deadline_seconds: Some(spec.migrations.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(
                    seq,
                    COMPONENT_MIGRATIONS,
                    [(ANNOTATION_DEFAULT_CONTAINER, CONTAINER_MIGRATE.to_string())],
                )),
                spec: Some(pod_spec(seq, container, Some("Never"))),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image a migration Job migrates, read from its annotation.
pub fn migration_job_image(job: &Job) -> Option<String> {
    job.annotations().get(ANNOTATION_MIGRATION_IMAGE).cloned()
}
