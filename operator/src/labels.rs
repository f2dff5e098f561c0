//! Every label, annotation and name the operator writes or understands, declared once.
//!
//! Nothing else in the crate spells one of these strings.

/// API group of the operator's custom resources.
pub const API_GROUP: &str = "sequencer.stateset.io";

/// The one field manager every server-side apply of the operator uses, so ownership of fields
/// never splits between two managers of ours.
pub const FIELD_MANAGER: &str = "sequencer-operator";

/// Name of the operator as it reports events and as `app.kubernetes.io/managed-by`.
pub const OPERATOR_NAME: &str = "sequencer-operator";

/// Standard label: the application, constant for every object of every sequencer.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_NAME`].
pub const APP_NAME: &str = "stateset-sequencer";

/// Standard label: the `Sequencer` an object belongs to (its name). Part of the pod selector.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";

/// Standard label: which part of a sequencer an object is ([`COMPONENT_SERVER`] or
/// [`COMPONENT_MIGRATIONS`]). Part of the pod selector, so migration pods never join the Service.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_COMPONENT`] for the server pods and the objects around them.
pub const COMPONENT_SERVER: &str = "sequencer";
/// Value of [`LABEL_COMPONENT`] for migration Jobs and their pods.
pub const COMPONENT_MIGRATIONS: &str = "migrations";

/// Standard label: who manages the object (always [`OPERATOR_NAME`]).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Pod template annotation: SHA-256 of the ConfigMap's data. A change of configuration changes it,
/// which rolls the Deployment (environment from a ConfigMap is read only at container start).
pub const ANNOTATION_CONFIG_HASH: &str = "sequencer.stateset.io/config-hash";

/// Pod template annotation: SHA-256 over the values of every Secret key the Sequencer references.
/// Rotating a referenced Secret changes it, which rolls the Deployment.
pub const ANNOTATION_SECRETS_HASH: &str = "sequencer.stateset.io/secrets-hash";

/// Migration Job annotation: the image whose migrations the Job applies. The operator reads it
/// back to know which image a finished Job cleared for rollout.
pub const ANNOTATION_MIGRATION_IMAGE: &str = "sequencer.stateset.io/migration-image";

/// Name of the sequencer container in the Deployment's pods (the operator reads its image back).
pub const CONTAINER_SEQUENCER: &str = "sequencer";
/// Name of the container of a migration Job.
pub const CONTAINER_MIGRATE: &str = "migrate";
/// Name of the HTTP port, on the container and the Service.
pub const PORT_NAME: &str = "http";
/// The sequencer's HTTP port (`PORT`), also the Service port.
pub const HTTP_PORT: i32 = 8080;

/// Well-known pod annotation: the container `kubectl logs` and `kubectl exec` pick by default.
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
