//! `SequencerAction`: one runbook action run once against one `Sequencer` through its admin API.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalObjectReference, UUID_PATTERN};

/// Most entries of a list the operator copies into an action's status (rejected dead letters,
/// verification findings); the totals are always complete.
pub const MAX_LISTED_IN_STATUS: usize = 20;

/// A runbook action against one Sequencer of this namespace: retry an anchor, replay or purge dead letters, verify, pause or resume a stream, correct a commitment, or run database maintenance. It runs at most once, ends Succeeded or Failed before its deadline, and is kept until deleted (or ttlSecondsAfterFinished after it finished, when set).
// NB: clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sequencer.stateset.io",
    version = "v1alpha1",
    kind = "SequencerAction",
    namespaced,
    shortname = "seqaction",
    category = "stateset",
    status = "SequencerActionStatus",
    doc = "One runbook action (AnchorRetry, DeadLetterReplay, DeadLetterPurge, VerifyStream, PauseStream, ResumeStream, CorrectCommitment, VacuumAnalyze or TerminateIdleConnections) run at most once against one Sequencer through its admin API; its outcome is kept in status until the action is deleted.",
    printcolumn(
        name = "Sequencer",
        type_ = "string",
        json_path = ".spec.sequencerRef.name",
        description = "The Sequencer the action runs against"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded or Failed"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason",
        description = "Why the action is in its phase"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable: create a new SequencerAction instead"),
    validation = Rule::new("(has(self.anchorRetry) ? 1 : 0) + (has(self.deadLetterReplay) ? 1 : 0) + (has(self.verifyStream) ? 1 : 0) + (has(self.pauseStream) ? 1 : 0) + (has(self.resumeStream) ? 1 : 0) + (has(self.correctCommitment) ? 1 : 0) + (has(self.deadLetterPurge) ? 1 : 0) + (has(self.vacuumAnalyze) ? 1 : 0) + (has(self.terminateIdleConnections) ? 1 : 0) == 1").message("set exactly one operation: anchorRetry, deadLetterReplay, deadLetterPurge, verifyStream, pauseStream, resumeStream, correctCommitment, vacuumAnalyze or terminateIdleConnections")
)]
#[serde(rename_all = "camelCase")]
pub struct SequencerActionSpec {
    /// The Sequencer, in this namespace, whose admin API runs the action.
    pub sequencer_ref: LocalObjectReference,

    /// Re-send the anchor transaction of one commitment batch (POST /api/v1/ves/anchor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_retry: Option<AnchorRetry>,

    /// Re-run dead-lettered events through ingest, chosen by id or by filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_replay: Option<DeadLetterReplay>,

    /// Check one stream for gaps, duplicates, bad hashes or signatures and commitment mismatches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_stream: Option<VerifyStream>,

    /// Stop ingestion of one stream (its ingest answers 503) until it is resumed: the runbook's first step on a sequence gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_stream: Option<PauseStream>,

    /// Accept events for one paused stream again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_stream: Option<StreamRef>,

    /// Create a correcting commitment for a bad one (POST /api/v1/ves/commitments/{batchId}/correct); the bad one is marked superseded and stays queryable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_commitment: Option<CorrectCommitment>,

    /// Delete dead letters (by default the resolved ones) matching a filter: the runbook's last step after a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_purge: Option<DeadLetterPurge>,

    /// Run VACUUM ANALYZE on the runbook's tables (database-wide: needs the bootstrap admin key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuum_analyze: Option<VacuumAnalyze>,

    /// Terminate connections to the sequencer's database idle longer than a given time (database-wide: needs the bootstrap admin key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_idle_connections: Option<TerminateIdleConnections>,

    /// Seconds after creation by which the action must have finished; after that it fails with reason DeadlineExceeded and is not tried again.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub deadline_seconds: u32,

    /// Seconds after the action finishes (Succeeded or Failed) before the operator deletes it. Unset (the default) keeps a finished action until someone deletes it: a GitOps tool (Argo CD, Flux) would re-create a deleted action from Git and run it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<u32>,
}

fn default_deadline_seconds() -> u32 {
    600
}

/// Re-send the anchor transaction of one commitment batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnchorRetry {
    /// UUID of the commitment batch to anchor.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub batch_id: String,
}

/// Re-run dead-lettered events through ingest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.ids) != has(self.filter)").message("deadLetterReplay needs exactly one of ids or filter")
)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterReplay {
    /// UUIDs of the dead letters to replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000), inner(pattern(UUID_PATTERN), length(max = 36)))]
    pub ids: Option<Vec<String>>,

    /// Replay every pending dead letter matching all the criteria given; an empty filter replays all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<DeadLetterFilter>,
}

/// Criteria selecting dead letters; all given criteria must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterFilter {
    /// Only dead letters of this tenant (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: Option<String>,

    /// Only dead letters of this store (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub store_id: Option<String>,

    /// Only dead letters rejected for this reason, such as invalid_signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub reason: Option<String>,
}

/// The stream (tenant and store) to verify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyStream {
    /// Tenant UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: String,

    /// Store UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub store_id: String,

    /// Receipt public keys (hex, as `public_key` of `GET /api/v1/ves/sequencer`) the stream's sequencer
    /// signatures must verify under, instead of the keys the database recorded: keys kept outside the
    /// database catch a signature forged by someone who could also record the forger's key. List the keys
    /// before and after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        inner(pattern(RECEIPT_KEY_PATTERN), length(max = 66)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub receipt_keys: Option<Vec<String>>,
}

/// An Ed25519 public key in hex, optionally `0x`- or `0X`-prefixed, as the sequencer parses one
/// (`ves::verify::public_key_from_hex`).
const RECEIPT_KEY_PATTERN: &str = "^(0[xX])?[0-9a-fA-F]{64}$";

/// Stop ingestion of one stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStream {
    /// Tenant UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: String,

    /// Store UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub store_id: String,

    /// Why the stream is paused, shown in the sequencer's stream status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub reason: Option<String>,
}

/// One stream (tenant and store).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamRef {
    /// Tenant UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: String,

    /// Store UUID of the stream.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub store_id: String,
}

/// Correct one commitment stored with wrong data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectCommitment {
    /// UUID of the bad commitment batch.
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub batch_id: String,

    /// Why the commitment is wrong; recorded in the bad commitment's metadata.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// Which dead letters to delete; all given criteria must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPurge {
    /// resolved (the default: entries a replay sequenced) or pending (entries nobody will fix; their events are lost).
    #[serde(default)]
    pub status: DeadLetterStatus,

    /// Only dead letters of this tenant (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub tenant_id: Option<String>,

    /// Only dead letters of this store (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(UUID_PATTERN), length(max = 36))]
    pub store_id: Option<String>,

    /// Only dead letters rejected for this reason, such as invalid_signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub reason: Option<String>,
}

/// The state of a dead letter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterStatus {
    /// Sequenced by a replay; kept for the record.
    #[default]
    Resolved,
    /// Still refused.
    Pending,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Resolved => "resolved",
            DeadLetterStatus::Pending => "pending",
        }
    }
}

/// VACUUM ANALYZE of the sequencer's tables.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VacuumAnalyze {
    /// Tables to vacuum; unset means the runbook's events, ves_events and commitments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub tables: Option<Vec<MaintainedTable>>,
}

/// A table of the sequencer that maintenance may vacuum.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaintainedTable {
    Events,
    VesEvents,
    Commitments,
    DeadLetterEvents,
    EventLeafRuns,
    SequenceCounters,
    AgentKeys,
    ApiKeys,
}

impl MaintainedTable {
    /// The table's name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintainedTable::Events => "events",
            MaintainedTable::VesEvents => "ves_events",
            MaintainedTable::Commitments => "commitments",
            MaintainedTable::DeadLetterEvents => "dead_letter_events",
            MaintainedTable::EventLeafRuns => "event_leaf_runs",
            MaintainedTable::SequenceCounters => "sequence_counters",
            MaintainedTable::AgentKeys => "agent_keys",
            MaintainedTable::ApiKeys => "api_keys",
        }
    }
}

/// Terminate idle connections, as the runbook's "Database Connection Exhaustion" does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminateIdleConnections {
    /// Connections idle longer than this many seconds are terminated (the runbook uses 600).
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 60, max = 86400))]
    pub idle_longer_than_seconds: u32,
}

fn default_idle_seconds() -> u32 {
    600
}

/// The one operation an action's spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    AnchorRetry(&'a AnchorRetry),
    DeadLetterReplay(&'a DeadLetterReplay),
    VerifyStream(&'a VerifyStream),
    PauseStream(&'a PauseStream),
    ResumeStream(&'a StreamRef),
    CorrectCommitment(&'a CorrectCommitment),
    DeadLetterPurge(&'a DeadLetterPurge),
    VacuumAnalyze(&'a VacuumAnalyze),
    TerminateIdleConnections(&'a TerminateIdleConnections),
}

impl Operation<'_> {
    /// The operation's name as the CRD spells it (AnchorRetry, DeadLetterReplay, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::AnchorRetry(_) => "AnchorRetry",
            Operation::DeadLetterReplay(_) => "DeadLetterReplay",
            Operation::VerifyStream(_) => "VerifyStream",
            Operation::PauseStream(_) => "PauseStream",
            Operation::ResumeStream(_) => "ResumeStream",
            Operation::CorrectCommitment(_) => "CorrectCommitment",
            Operation::DeadLetterPurge(_) => "DeadLetterPurge",
            Operation::VacuumAnalyze(_) => "VacuumAnalyze",
            Operation::TerminateIdleConnections(_) => "TerminateIdleConnections",
        }
    }
}

impl SequencerActionSpec {
    /// The operation, or why the spec names none or several (the CRD's CEL rules reject both, so
    /// this only matters when the CRD in the cluster is older than the operator).
    pub fn operation(&self) -> Result<Operation<'_>, String> {
        let mut set = Vec::with_capacity(1);
        if let Some(a) = &self.anchor_retry {
            set.push(Operation::AnchorRetry(a));
        }
        if let Some(d) = &self.dead_letter_replay {
            if d.ids.is_some() == d.filter.is_some() {
                return Err("deadLetterReplay needs exactly one of ids or filter".into());
            }
            set.push(Operation::DeadLetterReplay(d));
        }
        if let Some(v) = &self.verify_stream {
            set.push(Operation::VerifyStream(v));
        }
        if let Some(p) = &self.pause_stream {
            set.push(Operation::PauseStream(p));
        }
        if let Some(r) = &self.resume_stream {
            set.push(Operation::ResumeStream(r));
        }
        if let Some(c) = &self.correct_commitment {
            set.push(Operation::CorrectCommitment(c));
        }
        if let Some(p) = &self.dead_letter_purge {
            set.push(Operation::DeadLetterPurge(p));
        }
        if let Some(v) = &self.vacuum_analyze {
            set.push(Operation::VacuumAnalyze(v));
        }
        if let Some(t) = &self.terminate_idle_connections {
            set.push(Operation::TerminateIdleConnections(t));
        }
        match set.len() {
            1 => Ok(set.remove(0)),
            _ => Err("set exactly one operation: anchorRetry, deadLetterReplay, deadLetterPurge, verifyStream, \
                      pauseStream, resumeStream, correctCommitment, vacuumAnalyze or terminateIdleConnections"
                .into()),
        }
    }
}

/// Where an action is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ActionPhase {
    /// Accepted, waiting for its Sequencer to serve.
    #[default]
    Pending,
    /// Calling the admin API (retrying transient failures until the deadline).
    Running,
    /// Finished as asked; never run again.
    Succeeded,
    /// Finished without doing what was asked; never run again.
    Failed,
}

impl ActionPhase {
    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, ActionPhase::Succeeded | ActionPhase::Failed)
    }
}

/// Observed state of a SequencerAction, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequencerActionStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default)]
    pub phase: ActionPhase,

    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled (the kstatus conventions GitOps tools read), Succeeded (Unknown until the action finishes) and Complete, one of each.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// What happened last, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Calls made to the admin API so far.
    #[serde(default)]
    pub attempts: u32,

    /// When the first call to the admin API was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the action reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// What the admin API answered, once the action finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ActionResult>,
}

/// What the admin API answered; exactly one member is set, matching the operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// Outcome of an AnchorRetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorResult>,

    /// Outcome of a DeadLetterReplay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_replay: Option<ReplayResult>,

    /// Outcome of a VerifyStream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyResult>,

    /// Outcome of a PauseStream or ResumeStream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamResult>,

    /// Outcome of a CorrectCommitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<CorrectionResult>,

    /// Outcome of a DeadLetterPurge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_purge: Option<PurgeResult>,

    /// Outcome of a VacuumAnalyze or TerminateIdleConnections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceResult>,
}

/// Outcome of a PauseStream or ResumeStream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamResult {
    /// Whether the stream's ingestion is paused now.
    pub paused: bool,
}

/// Outcome of a CorrectCommitment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectionResult {
    /// UUID of the correcting commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_batch_id: Option<String>,
}

/// Outcome of a DeadLetterPurge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeResult {
    /// Dead letters deleted.
    pub deleted: u64,
}

/// Outcome of database maintenance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceResult {
    /// Tables vacuumed and analyzed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Connections terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<u64>,
}

/// Outcome of an AnchorRetry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnchorResult {
    /// anchored, or already_anchored when an earlier transaction had anchored the batch.
    pub status: String,

    /// Hash of the anchoring transaction, when the sequencer reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_tx_hash: Option<String>,
}

/// Outcome of a DeadLetterReplay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayResult {
    /// Dead letters the sequencer tried to replay.
    pub attempted: u64,
    /// Dead letters sequenced by the replay.
    pub succeeded: u64,
    /// Dead letters rejected again.
    pub failed: u64,
    /// The first rejected dead letters with their reasons (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedDeadLetter>,
}

/// A dead letter the replay rejected again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedDeadLetter {
    /// UUID of the dead letter.
    pub id: String,
    /// UUID of the event it holds, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Why ingest rejected it again, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Outcome of a VerifyStream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    /// Whether the stream verified without findings.
    pub ok: bool,
    /// Streams the sequencer checked.
    pub streams_checked: u64,
    /// Events the sequencer checked.
    pub events_checked: u64,
    /// All findings, counted by kind (gap, duplicate, bad_hash, bad_signature, commitment_mismatch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub findings_by_kind: BTreeMap<String, u64>,
    /// The first findings (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<VerifyFinding>,
}

/// One inconsistency found in a stream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyFinding {
    /// gap, duplicate, bad_hash, bad_signature or commitment_mismatch.
    pub kind: String,
    /// Sequence number concerned, when the finding has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// What is wrong, as the sequencer describes it.
    pub detail: String,
}

impl SequencerAction {
    /// The phase, Pending before the first status write.
    pub fn phase(&self) -> ActionPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
