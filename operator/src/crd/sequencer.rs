//! `Sequencer`: one sequencer deployment, its database, keys, limits and anchoring.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalObjectReference, SecretKeyRef, UUID_PATTERN};

/// Image tag the operator deploys when `spec.image` is not set: the operator's own version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/stateset/stateset-sequencer:", env!("CARGO_PKG_VERSION"));

/// Desired state of one StateSet sequencer: its pods, database, keys, limits and anchoring.
// NB: clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sequencer.stateset.io",
    version = "v1alpha1",
    kind = "Sequencer",
    namespaced,
    shortname = "seq",
    category = "stateset",
    status = "SequencerStatus",
    doc = "A StateSet verifiable event sequencer: a Deployment of sequencer pods on one PostgreSQL database, with migrations, keys, rate limits and L2 anchoring managed by the operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the desired spec is rolled out and serving"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of sequencer pods"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas",
        description = "Sequencer pods ready for at least minReadySeconds"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Sequencer version reported by its admin API"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.currentImage",
        priority = 1,
        description = "Image the Deployment runs"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 47").message("metadata.name must be at most 47 characters, so that the names of the sequencer's migration Jobs fit in 63"),
    validation = Rule::new("!has(self.spec.env) || self.spec.env.all(e, !(e.name in ['DATABASE_URL', 'READ_DATABASE_URL', 'BOOTSTRAP_ADMIN_API_KEY', 'VES_SEQUENCER_SIGNING_KEY', 'L2_RPC_URL', 'SEQUENCER_PRIVATE_KEY', 'PGSSLMODE', 'PGSSLROOTCERT']))").message("spec.env must not set DATABASE_URL, READ_DATABASE_URL, BOOTSTRAP_ADMIN_API_KEY, VES_SEQUENCER_SIGNING_KEY, L2_RPC_URL, SEQUENCER_PRIVATE_KEY, PGSSLMODE or PGSSLROOTCERT: the operator sets them from the spec"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter), because it names the sequencer's Service"),
)]
#[serde(rename_all = "camelCase")]
pub struct SequencerSpec {
    /// Number of sequencer pods. Every replica serves ingest on the same database; sequencing stays gap-free across them. A PodDisruptionBudget is created when this is above 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// Container image holding `stateset-sequencer` (the entrypoint) and `stateset-sequencer-admin`. Changing it rolls the pods, after the migration Job succeeds when `migrations.mode` is `Job`.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Secrets with credentials for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The PostgreSQL database holding the event log; all replicas share it.
    pub database: DatabaseSpec,

    /// The sequencer's identity in receipts and signed checkpoints.
    #[serde(default)]
    pub identity: IdentitySpec,

    /// How and when database migrations run.
    #[serde(default)]
    pub migrations: MigrationsSpec,

    /// Credentials of the admin API, used by operators and by this operator to read status and run SequencerActions.
    pub auth: AuthSpec,

    /// Secret key holding the receipt signing key (64 hexadecimal characters). Every replica signs receipts with it, so it must be the same for all and survive restarts.
    pub receipt_signing_key_secret: SecretKeyRef,

    /// Ingest rate limits: a default for every tenant and overrides for some.
    #[serde(default)]
    pub rate_limits: RateLimitsSpec,

    /// Anchoring of commitments on an L2 chain through the SET registry contract.
    #[serde(default)]
    pub anchoring: AnchoringSpec,

    /// The transparency log of every stream (RFC 6962, served as C2SP tlog-tiles): how often events are integrated, the witnesses that cosign its checkpoints, and the streams anyone may read without a credential.
    #[serde(default)]
    pub transparency_log: TransparencyLogSpec,

    /// Size limits of ingest requests.
    #[serde(default)]
    pub ingest: IngestSpec,

    /// Log format and filter of the sequencer pods.
    #[serde(default)]
    pub logging: LoggingSpec,

    /// How often the operator reads the sequencer's admin status into this resource's status.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// The Service in front of the sequencer pods.
    #[serde(default)]
    pub service: ServiceSpec,

    /// CPU and memory requests and limits of the sequencer container (and of migration Jobs). When unset, requests of 100m CPU and 128Mi memory apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where the sequencer pods (and migration Jobs) may be scheduled.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// Labels and annotations added to the sequencer pods (and migration Job pods), for example for a service mesh or cost allocation. The operator's own labels win over these.
    #[serde(default)]
    pub pod: PodMetadataSpec,

    /// The ServiceAccount of the sequencer pods.
    #[serde(default)]
    pub service_account: ServiceAccountSpec,

    /// Extra environment variables of the sequencer container, for settings the spec does not model (any variable the sequencer reads). They override the ConfigMap's settings of the same name; the variables the operator sets from Secrets cannot be overridden. Secrets go through valueFrom.secretKeyRef: they are hashed into the pod template like the others, so rotating them rolls the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

fn default_replicas() -> i32 {
    1
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull only when the image is not on the node yet.
    #[default]
    IfNotPresent,
    /// Pull on every container start.
    Always,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// The PostgreSQL database and the connection pool of each replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the connection URL (`postgres://user:password@host:5432/database`), given to the pods as DATABASE_URL.
    pub url_secret: SecretKeyRef,

    /// Connection pool of each replica; the database must accept replicas × maxConnections connections (plus one for a migration Job).
    #[serde(default)]
    pub pool: PoolSpec,

    /// TLS to PostgreSQL: the sslmode and the CA that signs the server's certificate. When unset the URL's own parameters apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DatabaseTlsSpec>,

    /// Server-side session guards, so that a stuck query cannot hold a stream's counter lock forever. When unset the sequencer's defaults apply.
    #[serde(default)]
    pub timeouts: DatabaseTimeoutsSpec,

    /// A PostgreSQL streaming replica (hot standby) of the database that serves reads: event listings, proofs, checkpoints, transparency-log reads and verification go to it while it lags the primary by at most maxLagMs, and to the primary otherwise. Reads served by it may miss the newest writes for up to maxLagMs (a just-sequenced event's proof may answer 404 until then). When unset every read goes to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_replica: Option<ReadReplicaSpec>,
}

/// A streaming replica of the database for reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadReplicaSpec {
    /// Secret key holding the replica's connection URL (`postgres://user:password@replica-host:5432/database`), given to the pods as READ_DATABASE_URL. database.tls applies to it too. Each sequencer pod opens up to pool.maxConnections connections to it (it must accept them, and allow hot-standby reads).
    pub url_secret: SecretKeyRef,

    /// Reads go to the replica only while it is known to hold everything the primary had committed this many milliseconds ago (READ_REPLICA_MAX_LAG_MS). When unset the sequencer's default (5000) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub max_lag_ms: Option<u32>,

    /// Milliseconds between two comparisons of the replica's replayed position with the primary's (READ_REPLICA_CHECK_INTERVAL_MS). When unset the sequencer's default (500) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub check_interval_ms: Option<u32>,
}

/// TLS to PostgreSQL, given to the pods and the migration Job as PGSSLMODE and PGSSLROOTCERT.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(self.sslMode in ['verify-ca', 'verify-full']) || has(self.caSecret)").message("database.tls.sslMode verify-ca and verify-full need database.tls.caSecret")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTlsSpec {
    /// PostgreSQL sslmode (PGSSLMODE): disable, prefer, require, verify-ca or verify-full.
    pub ssl_mode: SslMode,

    /// Secret key holding the PEM CA certificate(s) that sign the server's certificate. It is mounted read-only into the pods and the migration Job, and PGSSLROOTCERT names the mounted file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

/// PostgreSQL sslmode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS always, without checking the server's certificate.
    Require,
    /// TLS with the server's certificate checked against the CA.
    VerifyCa,
    /// TLS with the certificate checked against the CA and the host name.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// PostgreSQL session timeouts of the sequencer's connections, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTimeoutsSpec {
    /// Longest a statement may run (DB_STATEMENT_TIMEOUT_MS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400000))]
    pub statement_timeout_ms: Option<i32>,

    /// Longest a statement waits for a lock (DB_LOCK_TIMEOUT_MS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400000))]
    pub lock_timeout_ms: Option<i32>,

    /// Longest a session may sit idle inside a transaction (DB_IDLE_IN_TRANSACTION_TIMEOUT_MS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400000))]
    pub idle_in_transaction_timeout_ms: Option<i32>,
}

/// The sequencer's identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// UUID written into receipts (VES_SEQUENCER_ID). When unset it is this Sequencer's metadata.uid, so it is stable across restarts and the same for every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub sequencer_id: Option<String>,

    /// Key name of signed checkpoints (VES_CHECKPOINT_ORIGIN), e.g. `ledger.example.com/sequencer`. When unset it is `stateset-sequencer/<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern("^[^\\s+]+$"))]
    pub checkpoint_origin: Option<String>,
}

/// Labels and annotations of the sequencer pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadataSpec {
    /// Labels added to the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The ServiceAccount of the sequencer pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Annotations of the ServiceAccount, e.g. for workload identity (`eks.amazonaws.com/role-arn`, `iam.gke.io/gcp-service-account`, `azure.workload.identity/client-id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Connection pool sizes of each replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.minConnections <= self.maxConnections").message("database.pool.minConnections must not exceed database.pool.maxConnections")
)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Most connections one replica opens (MAX_DB_CONNECTIONS).
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,

    /// Connections one replica keeps open when idle (MIN_DB_CONNECTIONS).
    #[serde(default = "default_min_connections")]
    #[schemars(range(max = 1000))]
    pub min_connections: u32,

    /// Milliseconds a request waits for a free connection before failing (DB_ACQUIRE_TIMEOUT_MS).
    #[serde(default = "default_acquire_timeout_ms")]
    #[schemars(range(min = 100, max = 600000))]
    pub acquire_timeout_ms: u32,
}

fn default_max_connections() -> u32 {
    20
}
fn default_min_connections() -> u32 {
    2
}
fn default_acquire_timeout_ms() -> u32 {
    5000
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            min_connections: default_min_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
        }
    }
}

/// How and when database migrations run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSpec {
    /// `Job` runs `stateset-sequencer-admin migrate` in a Job for every new image and rolls the pods only after it succeeds; `OnStartup` lets every pod migrate as it starts (DB_MIGRATE_ON_STARTUP=true); `Disabled` leaves the schema to you.
    #[serde(default)]
    pub mode: MigrationsMode,

    /// Retries of a failing migration Job before it is declared failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// Seconds a migration Job may run in total before it is stopped and declared failed.
    #[serde(default = "default_migration_deadline")]
    #[schemars(range(min = 30, max = 86400))]
    pub active_deadline_seconds: i64,

    /// Times a failed migration Job is replaced by a new one (after 30 s, then doubling up to 10 minutes), for example while the database is still starting. The Sequencer is Stalled only after the last attempt failed.
    #[serde(default = "default_migration_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: i32,
}

fn default_migration_retries() -> i32 {
    3
}

fn default_backoff_limit() -> i32 {
    2
}
fn default_migration_deadline() -> i64 {
    600
}

impl Default for MigrationsSpec {
    fn default() -> Self {
        Self {
            mode: MigrationsMode::default(),
            backoff_limit: default_backoff_limit(),
            active_deadline_seconds: default_migration_deadline(),
            retries: default_migration_retries(),
        }
    }
}

/// When database migrations run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MigrationsMode {
    /// A Job migrates before each rollout of a new image; the old pods keep running if it fails.
    #[default]
    Job,
    /// Each pod migrates as it starts (DB_MIGRATE_ON_STARTUP=true).
    OnStartup,
    /// Nobody migrates; the schema is managed outside the operator.
    Disabled,
}

/// Credentials of the admin API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding the bootstrap admin API key (it starts with `ss_`), given to the pods as BOOTSTRAP_ADMIN_API_KEY. The operator reads it to call the admin API.
    pub admin_api_key_secret: SecretKeyRef,
}

/// Ingest rate limits. Each replica enforces them on its own, so the ceiling across the cluster is replicas times the value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitsSpec {
    /// Requests per minute every tenant may make to one replica (RATE_LIMIT_PER_MINUTE). When unset the sequencer's built-in default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub per_tenant_per_minute: Option<u32>,

    /// Limits for particular tenants that replace perTenantPerMinute for them (RATE_LIMIT_TENANT_OVERRIDES), one entry per tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["tenantId"]))]
    pub tenant_overrides: Vec<TenantRateLimit>,
}

/// The rate limit of one tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRateLimit {
    /// UUID of the tenant.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: String,

    /// Requests per minute this tenant may make to one replica.
    #[schemars(range(min = 1))]
    pub per_minute: u32,
}

/// Anchoring of commitments on an L2 chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!self.enabled || (has(self.rpcUrlSecret) && has(self.privateKeySecret))").message("anchoring.enabled requires anchoring.rpcUrlSecret and anchoring.privateKeySecret"),
    validation = Rule::new("!self.enabled || (has(self.chainId) && has(self.registryAddress))").message("anchoring.enabled requires anchoring.chainId and anchoring.registryAddress")
)]
#[serde(rename_all = "camelCase")]
pub struct AnchoringSpec {
    /// Whether the sequencer anchors commitments on chain. Requires rpcUrlSecret, privateKeySecret, chainId and registryAddress.
    #[serde(default)]
    pub enabled: bool,

    /// Secret key holding the L2 JSON-RPC URL (L2_RPC_URL); it is a Secret because such URLs often embed a provider token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_url_secret: Option<SecretKeyRef>,

    /// Secret key holding the private key of the account that sends anchor transactions (SEQUENCER_PRIVATE_KEY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret: Option<SecretKeyRef>,

    /// Chain id of the L2 network (L2_CHAIN_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub chain_id: Option<u64>,

    /// Address of the SET registry contract, 0x followed by 40 hexadecimal digits (SET_REGISTRY_ADDRESS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern("^0x[0-9a-fA-F]{40}$"))]
    pub registry_address: Option<String>,

    /// Seconds between two anchoring rounds (ANCHOR_INTERVAL_SECS).
    #[serde(default = "default_anchor_interval")]
    #[schemars(range(min = 1, max = 86400))]
    pub interval_seconds: u32,
}

fn default_anchor_interval() -> u32 {
    60
}

impl Default for AnchoringSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            rpc_url_secret: None,
            private_key_secret: None,
            chain_id: None,
            registry_address: None,
            interval_seconds: default_anchor_interval(),
        }
    }
}

/// Each stream's transparency log, its witnesses and who may read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransparencyLogSpec {
    /// Whether the sequencer integrates every stream's events into its transparency log, signs its checkpoints with the receipt signing key and sends them to the witnesses (TLOG_ENABLED).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Milliseconds between two integration rounds, about how long after its receipt an event is in a signed checkpoint (TLOG_INTEGRATE_INTERVAL_MS). When unset the sequencer's default (200) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub integrate_interval_ms: Option<u32>,

    /// Most events of one stream integrated in one transaction (TLOG_INTEGRATE_MAX_EVENTS). When unset the sequencer's default (4096) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub integrate_max_events: Option<u32>,

    /// C2SP tlog-witness witnesses: each new checkpoint of every stream goes to each of them with a consistency proof, and the cosignatures they answer with are served with the checkpoint (TLOG_WITNESSES). A witness that refuses or is down never holds ingest up; it shows in the sequencer's metrics and admin status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub witnesses: Vec<WitnessSpec>,

    /// Milliseconds between two rounds of sending checkpoints to the witnesses (TLOG_WITNESS_INTERVAL_MS). When unset the sequencer's default (1000) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub witness_interval_ms: Option<u32>,

    /// Milliseconds one request to a witness may take (TLOG_WITNESS_TIMEOUT_MS). When unset the sequencer's default (5000) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600000))]
    pub witness_timeout_ms: Option<u32>,

    /// Streams whose transparency log (checkpoint, tiles, proofs and bundles, nothing else) anyone may read without a credential, each `<tenant id>/<store id>`, or `<tenant id>/*` for every store of a tenant (TLOG_PUBLIC_READ). Listing a stream publishes all its events, payloads included. Empty (the default): reading a log needs the tenant's read credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 73)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(s, s.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[*])$'))").message("transparencyLog.publicRead entries must be <tenant UUID>/<store UUID> or <tenant UUID>/*"))]
    pub public_read: Vec<String>,

    /// Reads of the publicRead streams' logs without a credential that each replica answers per second, all callers together, in bursts of as many; past it they get 429 with Retry-After, and a request that brings a credential is answered as an authenticated read (TLOG_PUBLIC_READ_RATE_PER_SECOND). 0 lifts the limit. When unset the sequencer's default (100) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub public_read_rate_per_second: Option<u32>,
}

fn default_true() -> bool {
    true
}

impl Default for TransparencyLogSpec {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            integrate_interval_ms: None,
            integrate_max_events: None,
            witnesses: Vec::new(),
            witness_interval_ms: None,
            witness_timeout_ms: None,
            public_read: Vec::new(),
            public_read_rate_per_second: None,
        }
    }
}

/// A C2SP tlog-witness the sequencer sends checkpoints to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WitnessSpec {
    /// The witness's submission URL prefix, http:// or https://; `add-checkpoint` is appended. It may not carry credentials (this spec and the ConfigMap are not secret): set TLOG_WITNESSES from a Secret through spec.env for a witness that needs them.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^https?://[^/?#[:space:]]+([/?#][^[:space:]]*)?$')").message("transparencyLog.witnesses[].url must be an http:// or https:// URL"),
        validation = Rule::new("!self.matches('^https?://[^/?#]*@')").message("transparencyLog.witnesses[].url must not carry credentials: this spec and the ConfigMap are not secret (set TLOG_WITNESSES from a Secret through spec.env instead)")
    )]
    pub url: String,

    /// The witness's cosignature/v1 verifier key, `<name>+<key id, 8 hex digits>+<base64 of 0x04 and its 32-byte Ed25519 public key>` (a C2SP vkey). The sequencer also checks at start-up that the key id matches the name and key.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[^+[:space:]]+[+][0-9a-fA-F]{8}[+]B[A-P][A-Za-z0-9+/]{42}$')").message("transparencyLog.witnesses[].key must be a C2SP cosignature/v1 verifier key: <name>+<8 hex digits>+<base64 of 0x04 and a 32-byte Ed25519 key>"))]
    pub key: String,
}

/// Size limits of ingest requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Most events one ingest request may carry (MAX_EVENTS_PER_BATCH). When unset the sequencer's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_events_per_batch: Option<u32>,

    /// Largest request body in bytes (MAX_BODY_SIZE_BYTES). When unset the sequencer's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_body_size_bytes: Option<u64>,
}

/// Log format and filter of the sequencer pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// `json` (one object per line, for log pipelines) or `text` (LOG_FORMAT).
    #[serde(default)]
    pub format: LogFormat,

    /// A tracing filter such as `info` or `info,sequencer=debug` (RUST_LOG).
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 512))]
    pub level: String,
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Default for LoggingSpec {
    fn default() -> Self {
        Self { format: LogFormat::default(), level: default_log_level() }
    }
}

/// Log line format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// The value of LOG_FORMAT.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// How the operator watches the sequencer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Seconds between two reads of the admin status (dead letters, circuit breaker, unanchored commitments) into status.
    #[serde(default = "default_status_poll_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub status_poll_seconds: u32,

    /// A Prometheus Operator PodMonitor scraping the sequencer pods' /metrics. When the monitoring.coreos.com CRDs are absent the operator reports it in the MonitoringReady condition and an event instead of failing.
    #[serde(default)]
    pub pod_monitor: PodMonitorSpec,
}

/// The PodMonitor of the sequencer pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// Whether the operator creates the PodMonitor `<name>`.
    #[serde(default)]
    pub enabled: bool,

    /// Scrape interval, e.g. `30s`.
    #[serde(default = "default_scrape_interval")]
    #[schemars(pattern("^[0-9]+(ms|s|m|h)$"), length(max = 16))]
    pub interval: String,

    /// Extra labels of the PodMonitor, so that your Prometheus selects it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_scrape_interval() -> String {
    "30s".to_string()
}

impl Default for PodMonitorSpec {
    fn default() -> Self {
        Self { enabled: false, interval: default_scrape_interval(), labels: BTreeMap::new() }
    }
}

fn default_status_poll_seconds() -> u32 {
    30
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self { status_poll_seconds: default_status_poll_seconds(), pod_monitor: PodMonitorSpec::default() }
    }
}

/// The Service in front of the sequencer pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// How the Service is exposed.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations added to the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the Service is exposed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Where the sequencer pods may be scheduled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a node must have to run the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity rules of the pods. When unset, the operator prefers spreading replicas over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread over topology domains such as zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state of a Sequencer, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequencerStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing, Degraded, MigrationsApplied, AnchoringHealthy and DeadLettersPending, one of each.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Sequencer pods of the Deployment, of any image.
    #[serde(default)]
    pub replicas: i32,

    /// Sequencer pods passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Sequencer pods running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,

    /// Sequencer pods available to serve.
    #[serde(default)]
    pub available_replicas: i32,

    /// Label selector of the sequencer pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Image the Deployment runs now; it lags spec.image while a migration Job runs or after one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,

    /// Sequencer version reported by the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// What the operator last read from the sequencer's admin status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminStatusSummary>,

    /// Migration Jobs run for the image being rolled out (Job mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
}

/// The migration attempts for one image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The image whose migrations the attempts apply.
    pub image: String,
    /// Migration Jobs started for that image (the first run counts as 1).
    pub attempts: i32,
}

/// The figures the operator reads from the sequencer's admin status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminStatusSummary {
    /// Database schema version the sequencer reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,

    /// Whether the sequencer reached its database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_connected: Option<bool>,

    /// Dead-lettered events waiting for a fix and a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_pending: Option<u64>,

    /// State of the anchoring circuit breaker: closed, open or half_open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_state: Option<String>,

    /// Commitments not anchored on chain yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanchored_commitments: Option<u64>,

    /// Streams whose ingestion is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_streams: Option<u64>,
}

impl Sequencer {
    /// Every Secret key the pods read, in a fixed order: the database URL, the admin key, the
    /// signing key, the anchoring Secrets when anchoring is on, the database CA, the read replica's
    /// URL, and the secretKeyRefs of `spec.env`.
    pub fn referenced_secret_keys(&self) -> Vec<SecretKeyRef> {
        let spec = &self.spec;
        let mut keys = vec![
            spec.database.url_secret.clone(),
            spec.auth.admin_api_key_secret.clone(),
            spec.receipt_signing_key_secret.clone(),
        ];
        if spec.anchoring.enabled {
            keys.extend(spec.anchoring.rpc_url_secret.clone());
            keys.extend(spec.anchoring.private_key_secret.clone());
        }
        keys.extend(spec.database.tls.as_ref().and_then(|tls| tls.ca_secret.clone()));
        keys.extend(spec.database.read_replica.as_ref().map(|r| r.url_secret.clone()));
        for var in &spec.env {
            if let Some(selector) = var.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
                keys.push(SecretKeyRef::new(selector.name.clone(), selector.key.clone()));
            }
        }
        keys
    }

    /// Names of the Secrets the pods read (what the operator watches for this Sequencer).
    pub fn referenced_secrets(&self) -> std::collections::BTreeSet<String> {
        self.referenced_secret_keys().into_iter().map(|k| k.name).collect()
    }

    /// The condition of type `type_`, if the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }
}
