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

/// A runbook action against one Sequencer of this namespace: retry an anchor, replay dead letters or verify a stream. It runs once, ends Succeeded or Failed before its deadline, and is deleted a while after.
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
    doc = "One runbook action (AnchorRetry, DeadLetterReplay or VerifyStream) run once against one Sequencer through its admin API; its outcome is kept in status until the action is deleted after ttlSecondsAfterFinished.",
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
    validation = Rule::new("(has(self.anchorRetry) ? 1 : 0) + (has(self.deadLetterReplay) ? 1 : 0) + (has(self.verifyStream) ? 1 : 0) == 1").message("set exactly one of anchorRetry, deadLetterReplay or verifyStream")
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

    /// Seconds after creation by which the action must have finished; after that it fails with reason DeadlineExceeded and is not tried again.
    #[serde(default = "default_deadline_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub deadline_seconds: u32,

    /// Seconds after the action finishes (Succeeded or Failed) before the operator deletes it.
    #[serde(default = "default_ttl_seconds")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: u32,
}

fn default_deadline_seconds() -> u32 {
    600
}

fn default_ttl_seconds() -> u32 {
    86400
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
}

/// The one operation an action's spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    AnchorRetry(&'a AnchorRetry),
    DeadLetterReplay(&'a DeadLetterReplay),
    VerifyStream(&'a VerifyStream),
}

impl Operation<'_> {
    /// The operation's name as the CRD spells it (AnchorRetry, DeadLetterReplay, VerifyStream).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::AnchorRetry(_) => "AnchorRetry",
            Operation::DeadLetterReplay(_) => "DeadLetterReplay",
            Operation::VerifyStream(_) => "VerifyStream",
        }
    }
}

impl SequencerActionSpec {
    /// The operation, or why the spec names none or several (the CRD's CEL rules reject both, so
    /// this only matters when the CRD in the cluster is older than the operator).
    pub fn operation(&self) -> Result<Operation<'_>, String> {
        match (&self.anchor_retry, &self.dead_letter_replay, &self.verify_stream) {
            (Some(a), None, None) => Ok(Operation::AnchorRetry(a)),
            (None, Some(d), None) => match (&d.ids, &d.filter) {
                (Some(_), None) | (None, Some(_)) => Ok(Operation::DeadLetterReplay(d)),
                _ => Err("deadLetterReplay needs exactly one of ids or filter".into()),
            },
            (None, None, Some(v)) => Ok(Operation::VerifyStream(v)),
            _ => Err("set exactly one of anchorRetry, deadLetterReplay or verifyStream".into()),
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

    /// Succeeded (Unknown until the action finishes) and Complete, one of each.
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
