//! The life of a `SequencerAction` as a state machine: which inputs each phase accepts, and the
//! status each accepted input leads to. Pure: the controller feeds it what happened and writes
//! the status it returns.
//!
//! ```text
//!   Pending ──Attempt──▶ Running ──Finished(ok)──▶ Succeeded
//!      │  ▲Wait            │  ▲Wait/Attempt/        │
//!      │                   │   TransientError      └──▶ (nothing: never runs twice)
//!      └──Abort/Deadline──▶ Failed ◀──Finished(not ok)/Abort/Deadline
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::admin::{
    AdminError, AnchorResponse, CommitmentAnswer, MaintenanceAnswer, PurgeAnswer, ReplayResponse, StreamAnswer,
    VerifyResponse,
};
use crate::conditions::{Computed, ConditionType, Reason, Status, settle};
use crate::crd::{
    ActionPhase, ActionResult, AnchorResult, CorrectionResult, MAX_LISTED_IN_STATUS, MaintenanceResult, PurgeResult,
    RejectedDeadLetter, ReplayResult, SequencerActionStatus, StreamResult, VerifyFinding, VerifyResult,
};

/// What happened to an action since its last status.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The action cannot be attempted now (Sequencer missing or without a ready replica, admin key
    /// unreadable); it waits, up to its deadline.
    Wait { reason: Reason, message: String },
    /// A call to the admin API is about to be made.
    Attempt,
    /// The admin API answered; the outcome says how the action ended.
    Finished(Box<Outcome>),
    /// The call failed in a way that may pass (unreachable, 5xx, 429); it is retried until the deadline.
    TransientError { message: String },
    /// The action can never succeed as specified (refused request, invalid spec).
    Abort { reason: Reason, message: String },
    /// The deadline passed before the action finished.
    DeadlinePassed,
}

impl Input {
    fn name(&self) -> &'static str {
        match self {
            Input::Wait { .. } => "Wait",
            Input::Attempt => "Attempt",
            Input::Finished(_) => "Finished",
            Input::TransientError { .. } => "TransientError",
            Input::Abort { .. } => "Abort",
            Input::DeadlinePassed => "DeadlinePassed",
        }
    }
}

/// How an answered action ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub succeeded: bool,
    pub reason: Reason,
    pub message: String,
    pub result: ActionResult,
}

/// An input the current phase does not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {phase:?} action does not accept {input}{hint}")]
pub struct Refused {
    pub phase: ActionPhase,
    pub input: &'static str,
    hint: &'static str,
}

/// The status after `input`, or why the current phase refuses it.
pub fn next(
    current: &SequencerActionStatus,
    input: Input,
    generation: Option<i64>,
    now: &Time,
) -> Result<SequencerActionStatus, Refused> {
    use ActionPhase::*;
    let phase = current.phase;
    let refuse = |hint| Refused { phase, input: input.name(), hint };
    let mut status = current.clone();
    let (new_phase, reason, message) = match (phase, &input) {
        (Succeeded | Failed, _) => return Err(refuse(": a finished action never runs again")),
        (Pending, Input::Finished(_) | Input::TransientError { .. }) => {
            return Err(refuse(": nothing was attempted yet"));
        }
        (Pending | Running, Input::Wait { reason, message }) => (phase, *reason, message.clone()),
        (Pending | Running, Input::Attempt) => {
            status.attempts += 1;
            if status.start_time.is_none() {
                status.start_time = Some(now.clone());
            }
            let message = if status.attempts == 1 {
                "calling the admin API".to_string()
            } else {
                format!("calling the admin API (attempt {})", status.attempts)
            };
            (Running, Reason::Running, message)
        }
        (Running, Input::TransientError { message }) => (
            Running,
            Reason::RetryingAfterError,
            format!("attempt {} failed, retrying until the deadline: {message}", status.attempts),
        ),
        (Running, Input::Finished(outcome)) => {
            status.result = Some(outcome.result.clone());
            let phase = if outcome.succeeded { Succeeded } else { Failed };
            (phase, outcome.reason, outcome.message.clone())
        }
        (Pending | Running, Input::Abort { reason, message }) => (Failed, *reason, message.clone()),
        (Pending | Running, Input::DeadlinePassed) => {
            let last = current.message.as_deref().unwrap_or("nothing was attempted");
            (Failed, Reason::DeadlineExceeded, format!("the deadline passed before the action finished; last: {last}"))
        }
    };
    status.phase = new_phase;
    status.message = Some(message.clone());
    status.observed_generation = generation;
    if new_phase.is_terminal() {
        status.completion_time = Some(now.clone());
    }
    status.conditions = settle(&current.conditions, conditions(new_phase, reason, &message), generation, now);
    Ok(status)
}

/// The conditions of a phase, in the kstatus conventions GitOps tools read (the contract the
/// kstatus test and the Argo CD health script are written against):
///
/// | phase            | Ready | Reconciling          | Stalled        | Succeeded | Complete |
/// |------------------|-------|----------------------|----------------|-----------|----------|
/// | Pending, Running | False | True (reason: phase) | False          | Unknown   | False    |
/// | Succeeded        | True  | False                | False          | True      | True     |
/// | Failed           | False | False                | True (reason)  | False     | True     |
///
/// Every condition but Reconciling carries the reason of the last step; Reconciling's is the phase.
pub fn conditions(phase: ActionPhase, reason: Reason, message: &str) -> Vec<Computed> {
    use Status::{False, True, Unknown};
    let (ready, reconciling, stalled, succeeded, complete) = match phase {
        ActionPhase::Pending | ActionPhase::Running => (False, True, False, Unknown, False),
        ActionPhase::Succeeded => (True, False, False, True, True),
        ActionPhase::Failed => (False, False, True, False, True),
    };
    let reconciling_reason = match phase {
        ActionPhase::Pending => Reason::Pending,
        ActionPhase::Running => Reason::Running,
        _ => reason,
    };
    vec![
        Computed::new(ConditionType::Ready, ready, reason, message),
        Computed::new(ConditionType::Reconciling, reconciling, reconciling_reason, message),
        Computed::new(ConditionType::Stalled, stalled, reason, message),
        Computed::new(ConditionType::Succeeded, succeeded, reason, message),
        Computed::new(ConditionType::Complete, complete, reason, message),
    ]
}

/// The input an admin API error amounts to. `sequencer_rolling` says whether the Sequencer's pods
/// are being replaced: a 401 then may come from a pod that does not have a rotated admin key yet
/// (or still has the old one), so it is retried until the deadline instead of failing the action.
pub fn input_for_error(error: &AdminError, sequencer_rolling: bool) -> Input {
    if error.is_transient() {
        return Input::TransientError { message: error.to_string() };
    }
    if sequencer_rolling && error.status() == Some(401) {
        return Input::TransientError {
            message: format!("{error} while the Sequencer's pods roll (an admin key rotation?); retrying"),
        };
    }
    let reason = match error {
        AdminError::Decode { .. } => Reason::UnreadableResponse,
        AdminError::Api { status: 401 | 403, .. } => Reason::Unauthorized,
        AdminError::Api { status: 404, .. } => Reason::NotFound,
        _ => Reason::RequestRejected,
    };
    let message = match reason {
        Reason::UnreadableResponse => {
            format!("{error}; the sequencer may have done the work, check its logs before creating a new action")
        }
        _ => error.to_string(),
    };
    Input::Abort { reason, message }
}

/// How an AnchorRetry ended.
pub fn anchor_outcome(batch_id: &str, answer: AnchorResponse) -> Outcome {
    let result = ActionResult {
        anchor: Some(AnchorResult { status: answer.status.clone(), chain_tx_hash: answer.chain_tx_hash.clone() }),
        ..Default::default()
    };
    let tx = answer.chain_tx_hash.as_deref().map(|h| format!(" in transaction {h}")).unwrap_or_default();
    let (succeeded, reason, message) = match answer.status.as_str() {
        "anchored" => (true, Reason::Anchored, format!("batch {batch_id} anchored{tx}")),
        "already_anchored" => (true, Reason::AlreadyAnchored, format!("batch {batch_id} was already anchored{tx}")),
        other => (
            false,
            Reason::RequestRejected,
            format!("the sequencer answered an unknown anchor status {other:?} for batch {batch_id}"),
        ),
    };
    Outcome { succeeded, reason, message, result }
}

/// How a DeadLetterReplay ended: it succeeds only if no selected dead letter was rejected again.
pub fn replay_outcome(answer: ReplayResponse) -> Outcome {
    let rejected: Vec<RejectedDeadLetter> = answer
        .results
        .iter()
        .filter(|r| r.outcome != "sequenced")
        .take(MAX_LISTED_IN_STATUS)
        .map(|r| RejectedDeadLetter { id: r.id.clone(), event_id: r.event_id.clone(), reason: r.reason.clone() })
        .collect();
    let result = ActionResult {
        dead_letter_replay: Some(ReplayResult {
            attempted: answer.attempted,
            succeeded: answer.succeeded,
            failed: answer.failed,
            rejected,
        }),
        ..Default::default()
    };
    let (succeeded, reason, message) = match (answer.attempted, answer.failed) {
        (0, _) => (true, Reason::DeadLettersReplayed, "no dead letter matched".to_string()),
        (attempted, 0) => {
            (true, Reason::DeadLettersReplayed, format!("{} of {attempted} dead letters sequenced", answer.succeeded))
        }
        (attempted, failed) => (
            false,
            Reason::DeadLettersRejected,
            format!(
                "{failed} of {attempted} dead letters were rejected again ({} sequenced); see status.result for their reasons",
                answer.succeeded
            ),
        ),
    };
    Outcome { succeeded, reason, message, result }
}

/// How a PauseStream or ResumeStream ended.
pub fn stream_outcome(tenant_id: &str, store_id: &str, answer: StreamAnswer) -> Outcome {
    let (reason, verb) =
        if answer.paused { (Reason::StreamPaused, "paused") } else { (Reason::StreamResumed, "resumed") };
    Outcome {
        succeeded: true,
        reason,
        message: format!("ingestion of stream {tenant_id}/{store_id} {verb}"),
        result: ActionResult { stream: Some(StreamResult { paused: answer.paused }), ..Default::default() },
    }
}

/// How a CorrectCommitment ended: `answer` is the correcting commitment, or, when the sequencer
/// answered 409, the bad commitment as read afterwards (corrected already, by an earlier attempt
/// whose answer was lost or by someone else: the runbook's goal holds either way).
pub fn correction_outcome(batch_id: &str, answer: Correction) -> Outcome {
    let (reason, correction, message) = match answer {
        Correction::Created(c) => {
            let id = c.batch_id.unwrap_or_default();
            let message = format!("commitment {batch_id} corrected by the new commitment {id}");
            (Reason::CommitmentCorrected, id, message)
        }
        Correction::AlreadyCorrected(bad) => {
            let id = bad.superseded_by.unwrap_or_default();
            let message = format!("commitment {batch_id} was already corrected by commitment {id}");
            (Reason::AlreadyCorrected, id, message)
        }
    };
    Outcome {
        succeeded: true,
        reason,
        message,
        result: ActionResult {
            correction: Some(CorrectionResult { correction_batch_id: Some(correction) }),
            ..Default::default()
        },
    }
}

/// What the sequencer said to a correction.
#[derive(Clone, Debug, PartialEq)]
pub enum Correction {
    Created(CommitmentAnswer),
    AlreadyCorrected(CommitmentAnswer),
}

/// How a DeadLetterPurge ended.
pub fn purge_outcome(status: &str, answer: PurgeAnswer) -> Outcome {
    Outcome {
        succeeded: true,
        reason: Reason::DeadLettersPurged,
        message: format!("{} {status} dead letters deleted", answer.deleted),
        result: ActionResult { dead_letter_purge: Some(PurgeResult { deleted: answer.deleted }), ..Default::default() },
    }
}

/// How a VacuumAnalyze or TerminateIdleConnections ended.
pub fn maintenance_outcome(answer: MaintenanceAnswer) -> Outcome {
    let (reason, message) = match answer.terminated {
        Some(n) => (Reason::IdleConnectionsTerminated, format!("{n} idle connections terminated")),
        None => (Reason::Vacuumed, format!("VACUUM ANALYZE of {}", answer.tables.join(", "))),
    };
    Outcome {
        succeeded: true,
        reason,
        message,
        result: ActionResult {
            maintenance: Some(MaintenanceResult { tables: answer.tables, terminated: answer.terminated }),
            ..Default::default()
        },
    }
}

/// How a VerifyStream ended: any finding fails it, with the findings summarised.
pub fn verify_outcome(answer: VerifyResponse) -> Outcome {
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for finding in &answer.findings {
        *by_kind.entry(finding.kind.clone()).or_default() += 1;
    }
    let findings: Vec<VerifyFinding> = answer
        .findings
        .iter()
        .take(MAX_LISTED_IN_STATUS)
        .map(|f| VerifyFinding { kind: f.kind.clone(), sequence_number: f.sequence_number, detail: f.detail.clone() })
        .collect();
    let consistent = answer.ok && answer.findings.is_empty();
    let message = if consistent {
        format!("{} events in {} streams verified without findings", answer.events_checked, answer.streams_checked)
    } else {
        let mut message = format!("{} findings in {} events checked: ", answer.findings.len(), answer.events_checked);
        let counts: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        message.push_str(&counts.join(", "));
        if let Some(first) = answer.findings.first() {
            let at = first.sequence_number.map(|n| format!(" at sequence {n}")).unwrap_or_default();
            let _ = write!(message, "; first: {}{at}: {}", first.kind, first.detail);
        }
        message
    };
    Outcome {
        succeeded: consistent,
        reason: if consistent { Reason::StreamConsistent } else { Reason::StreamInconsistent },
        message,
        result: ActionResult {
            verify: Some(VerifyResult {
                ok: answer.ok,
                streams_checked: answer.streams_checked,
                events_checked: answer.events_checked,
                findings_by_kind: by_kind,
                findings,
            }),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Finding, ReplayItem};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn step(status: &SequencerActionStatus, input: Input, t: i64) -> SequencerActionStatus {
        next(status, input, Some(1), &at(t)).unwrap()
    }

    fn condition(status: &SequencerActionStatus, type_: ConditionType) -> (&str, &str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_.as_str()).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn succeeded() -> Outcome {
        anchor_outcome("b", AnchorResponse { status: "anchored".into(), ..Default::default() })
    }

    #[test]
    fn an_action_goes_pending_running_succeeded_and_records_when() {
        let pending = step(
            &SequencerActionStatus::default(),
            Input::Wait { reason: Reason::WaitingForSequencer, message: "no ready replica".into() },
            10,
        );
        assert_eq!(pending.phase, ActionPhase::Pending);
        assert_eq!(condition(&pending, ConditionType::Succeeded), ("Unknown", "WaitingForSequencer"));

        let running = step(&pending, Input::Attempt, 20);
        assert_eq!((running.phase, running.attempts), (ActionPhase::Running, 1));
        assert_eq!(running.start_time, Some(at(20)));

        let done = step(&running, Input::Finished(Box::new(succeeded())), 30);
        assert_eq!(done.phase, ActionPhase::Succeeded);
        assert_eq!(done.completion_time, Some(at(30)));
        assert_eq!(condition(&done, ConditionType::Succeeded), ("True", "Anchored"));
        assert_eq!(condition(&done, ConditionType::Complete), ("True", "Anchored"));
        assert_eq!(done.result.unwrap().anchor.unwrap().status, "anchored");
    }

    #[test]
    fn a_finished_action_refuses_every_input_so_it_never_runs_twice() {
        let running = step(&SequencerActionStatus::default(), Input::Attempt, 1);
        let done = step(&running, Input::Finished(Box::new(succeeded())), 2);
        for input in [Input::Attempt, Input::DeadlinePassed, Input::TransientError { message: "x".into() }] {
            let refused = next(&done, input, Some(1), &at(3)).unwrap_err();
            assert_eq!(refused.phase, ActionPhase::Succeeded);
            assert!(refused.to_string().contains("never runs again"));
        }
    }

    #[test]
    fn a_pending_action_refuses_results_because_nothing_was_attempted() {
        let refused = next(&SequencerActionStatus::default(), Input::Finished(Box::new(succeeded())), Some(1), &at(1))
            .unwrap_err();
        assert_eq!(refused.input, "Finished");
    }

    #[test]
    fn transient_errors_keep_the_action_running_and_count_attempts() {
        let first = step(&SequencerActionStatus::default(), Input::Attempt, 1);
        let failed = step(&first, Input::TransientError { message: "503 circuit_open".into() }, 2);
        let second = step(&failed, Input::Attempt, 3);
        assert_eq!(failed.phase, ActionPhase::Running);
        assert_eq!(condition(&failed, ConditionType::Succeeded), ("Unknown", "RetryingAfterError"));
        assert_eq!(second.attempts, 2);
        assert_eq!(second.start_time, Some(at(1)));
    }

    #[test]
    fn a_passed_deadline_fails_the_action_and_keeps_the_last_message() {
        let first = step(&SequencerActionStatus::default(), Input::Attempt, 1);
        let failed = step(&first, Input::TransientError { message: "503 circuit_open".into() }, 2);
        let dead = step(&failed, Input::DeadlinePassed, 3);
        assert_eq!(dead.phase, ActionPhase::Failed);
        assert_eq!(condition(&dead, ConditionType::Succeeded), ("False", "DeadlineExceeded"));
        assert!(dead.message.unwrap().contains("circuit_open"));
    }

    #[test]
    fn the_succeeded_condition_keeps_its_transition_time_while_waiting() {
        let wait = Input::Wait { reason: Reason::WaitingForSequencer, message: "x".into() };
        let first = step(&SequencerActionStatus::default(), wait.clone(), 1);
        let second = step(&first, wait, 50);
        assert_eq!(first, second);
    }

    #[test]
    fn client_errors_abort_with_a_reason_and_server_errors_are_retried() {
        let api = |status| AdminError::Api { status, code: "c".into(), message: "m".into() };
        assert!(matches!(input_for_error(&api(401), false), Input::Abort { reason: Reason::Unauthorized, .. }));
        assert!(matches!(input_for_error(&api(404), false), Input::Abort { reason: Reason::NotFound, .. }));
        assert!(matches!(input_for_error(&api(400), false), Input::Abort { reason: Reason::RequestRejected, .. }));
        assert!(matches!(input_for_error(&api(503), false), Input::TransientError { .. }));
        let decode = AdminError::Decode { url: "u".into(), message: "m".into() };
        assert!(matches!(input_for_error(&decode, false), Input::Abort { reason: Reason::UnreadableResponse, .. }));
    }

    #[test]
    fn a_401_while_the_sequencers_pods_roll_is_retried_but_a_403_is_not() {
        let api = |status| AdminError::Api { status, code: "c".into(), message: "m".into() };
        assert!(matches!(input_for_error(&api(401), true), Input::TransientError { .. }));
        assert!(matches!(input_for_error(&api(403), true), Input::Abort { reason: Reason::Unauthorized, .. }));
    }

    /// The kstatus contract of a SequencerAction (what the kstatus test and the Argo CD health
    /// script read): (type, status, reason) of every condition in each phase.
    #[test]
    fn each_phase_has_the_conditions_of_the_kstatus_contract() {
        let all = |s: &SequencerActionStatus| -> Vec<(String, String, String)> {
            s.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect()
        };
        let row = |t: &str, st: &str, r: &str| (t.to_string(), st.to_string(), r.to_string());
        let wait = Input::Wait { reason: Reason::WaitingForSequencer, message: "no ready replica".into() };
        let pending = step(&SequencerActionStatus::default(), wait, 1);
        assert_eq!(
            all(&pending),
            vec![
                row("Ready", "False", "WaitingForSequencer"),
                row("Reconciling", "True", "Pending"),
                row("Stalled", "False", "WaitingForSequencer"),
                row("Succeeded", "Unknown", "WaitingForSequencer"),
                row("Complete", "False", "WaitingForSequencer"),
            ]
        );
        let running = step(&pending, Input::Attempt, 2);
        assert!(all(&running).contains(&row("Reconciling", "True", "Running")));
        assert!(all(&running).contains(&row("Ready", "False", "Running")));
        assert!(!all(&running).iter().any(|(t, s, _)| t == "Stalled" && s == "True"));

        let done = step(&running, Input::Finished(Box::new(succeeded())), 3);
        assert_eq!(
            all(&done),
            vec![
                row("Ready", "True", "Anchored"),
                row("Reconciling", "False", "Anchored"),
                row("Stalled", "False", "Anchored"),
                row("Succeeded", "True", "Anchored"),
                row("Complete", "True", "Anchored"),
            ]
        );
        let failed = step(&running, Input::DeadlinePassed, 3);
        assert_eq!(
            all(&failed),
            vec![
                row("Ready", "False", "DeadlineExceeded"),
                row("Reconciling", "False", "DeadlineExceeded"),
                row("Stalled", "True", "DeadlineExceeded"),
                row("Succeeded", "False", "DeadlineExceeded"),
                row("Complete", "True", "DeadlineExceeded"),
            ]
        );
        for status in [&pending, &running, &done, &failed] {
            assert_eq!(status.observed_generation, Some(1));
            assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));
        }
    }

    #[test]
    fn the_new_operations_succeed_with_their_own_reasons_and_results() {
        let paused = stream_outcome("t", "s", StreamAnswer { paused: true, ..Default::default() });
        assert_eq!((paused.reason, paused.result.stream.unwrap().paused), (Reason::StreamPaused, true));
        let resumed = stream_outcome("t", "s", StreamAnswer::default());
        assert_eq!(resumed.reason, Reason::StreamResumed);
        let purged = purge_outcome("resolved", PurgeAnswer { deleted: 4 });
        assert_eq!(purged.message, "4 resolved dead letters deleted");
        let vacuumed = maintenance_outcome(MaintenanceAnswer { tables: vec!["events".into()], terminated: None });
        assert_eq!((vacuumed.reason, vacuumed.message.as_str()), (Reason::Vacuumed, "VACUUM ANALYZE of events"));
        let terminated = maintenance_outcome(MaintenanceAnswer { tables: vec![], terminated: Some(2) });
        assert_eq!(terminated.reason, Reason::IdleConnectionsTerminated);
        let again = correction_outcome(
            "b",
            Correction::AlreadyCorrected(CommitmentAnswer { superseded_by: Some("c".into()), ..Default::default() }),
        );
        assert!(again.succeeded);
        assert_eq!(again.reason, Reason::AlreadyCorrected);
    }

    #[test]
    fn an_already_anchored_batch_is_a_success() {
        let outcome = anchor_outcome(
            "b",
            AnchorResponse {
                status: "already_anchored".into(),
                chain_tx_hash: Some("0x1".into()),
                ..Default::default()
            },
        );
        assert!(outcome.succeeded);
        assert_eq!(outcome.reason, Reason::AlreadyAnchored);
        assert!(outcome.message.contains("0x1"));
    }

    #[test]
    fn a_replay_with_rejections_fails_and_lists_them() {
        let answer = ReplayResponse {
            attempted: 3,
            succeeded: 1,
            failed: 2,
            results: vec![
                ReplayItem { id: "a".into(), outcome: "sequenced".into(), ..Default::default() },
                ReplayItem {
                    id: "b".into(),
                    outcome: "rejected".into(),
                    reason: Some("invalid_signature".into()),
                    ..Default::default()
                },
                ReplayItem { id: "c".into(), outcome: "rejected".into(), ..Default::default() },
            ],
        };
        let outcome = replay_outcome(answer);
        assert!(!outcome.succeeded);
        assert_eq!(outcome.reason, Reason::DeadLettersRejected);
        let replay = outcome.result.dead_letter_replay.unwrap();
        assert_eq!(replay.rejected.len(), 2);
        assert_eq!(replay.rejected[0].reason.as_deref(), Some("invalid_signature"));
    }

    #[test]
    fn a_replay_of_nothing_succeeds_and_says_so() {
        let outcome = replay_outcome(ReplayResponse::default());
        assert!(outcome.succeeded);
        assert_eq!(outcome.message, "no dead letter matched");
    }

    #[test]
    fn a_verification_with_findings_fails_as_stream_inconsistent_with_a_summary() {
        let finding = |kind: &str, n| Finding {
            kind: kind.into(),
            sequence_number: Some(n),
            detail: format!("{kind} at {n}"),
            ..Default::default()
        };
        let mut findings: Vec<Finding> = (0..30).map(|n| finding("gap", n)).collect();
        findings.push(finding("bad_hash", 99));
        let outcome = verify_outcome(VerifyResponse { ok: false, streams_checked: 1, events_checked: 500, findings });
        assert!(!outcome.succeeded);
        assert_eq!(outcome.reason, Reason::StreamInconsistent);
        assert!(outcome.message.starts_with("31 findings in 500 events checked: bad_hash: 1, gap: 30"));
        let verify = outcome.result.verify.unwrap();
        assert_eq!(verify.findings.len(), MAX_LISTED_IN_STATUS);
        assert_eq!(verify.findings_by_kind["gap"], 30);
    }

    #[test]
    fn a_clean_verification_succeeds() {
        let outcome =
            verify_outcome(VerifyResponse { ok: true, streams_checked: 1, events_checked: 10, findings: vec![] });
        assert!(outcome.succeeded);
        assert_eq!(outcome.reason, Reason::StreamConsistent);
    }
}
