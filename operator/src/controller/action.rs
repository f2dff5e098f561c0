//! Reconcile of a `SequencerAction`: wait for the Sequencer, call its admin API at most once,
//! record the outcome, delete the action after its TTL (only when one is set).
//!
//! The phase decides: a finished action (Succeeded or Failed) is never called again. Before each
//! call the attempt is recorded in status (phase Running), so the call is visible and counted even
//! if the operator dies during it. Every status write carries the resourceVersion the decision was
//! made on (a PUT of the status subresource), so a decision taken on a stale object (an old watch
//! event, a lagging cache) gets a 409 from the API server instead of a second call: the attempt is
//! not made, the object is read again, and a terminal phase found there is never overwritten.
//! While Running, transient failures are retried with backoff until the deadline; the operations
//! tolerate the one repeat a lost answer can cause (a re-sent anchor answers already_anchored, a
//! repeated correction finds the commitment corrected, replayed or purged dead letters are gone,
//! pausing, resuming, verifying and maintenance are idempotent).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::Context;
use crate::action_state::{self, Correction, Input};
use crate::admin::{AdminClient, AdminError, PurgeFilter, ReplayFilter, ReplaySelector};
use crate::conditions::Reason;
use crate::crd::{ActionPhase, Operation, Sequencer, SequencerAction, SequencerActionStatus};
use crate::metrics::Controller;
use crate::{Error, Result};

/// How often a Pending action looks at its Sequencer again.
const WAIT_REQUEUE: Duration = Duration::from_secs(5);
/// First and longest pause between two attempts after a transient failure.
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest single call to the admin API (a stream verification may take minutes).
pub(crate) const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Requeue after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(15);
/// Requeue after losing a status write to a newer object (its watch event usually comes first).
const CONFLICT_REQUEUE: Duration = Duration::from_secs(1);
/// Writes of an outcome tried before giving up on a status that keeps changing under us.
const OUTCOME_WRITES: usize = 5;

/// Entry point of the controller.
#[instrument(skip_all, fields(action = %action.name_any(), namespace = action.namespace().unwrap_or_default()))]
pub async fn reconcile(action: Arc<SequencerAction>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(Controller::sequencer_action);
    if action.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    action.reconcile(&ctx, Timestamp::now()).await
}

/// Requeues a failed reconcile after a pause and counts the failure.
pub fn error_policy(action: Arc<SequencerAction>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(action = %action.name_any(), %error, "reconcile failed");
    ctx.metrics.failure(Controller::sequencer_action, error);
    Action::requeue(ERROR_REQUEUE)
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
fn seconds_between(from: &Timestamp, to: &Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

/// How a status write ended.
enum Step {
    /// Written; the object as stored now.
    Written(Box<SequencerAction>),
    /// Refused with 409 because the object changed since it was read; the object as read again.
    Lost { fresh: Box<SequencerAction>, conflict: kube::Error },
}

/// Whether the Sequencer's pods are being replaced (some run an older pod template).
fn rolling(sequencer: &Sequencer) -> bool {
    sequencer.status.as_ref().is_some_and(|s| {
        s.updated_replicas < s.replicas
            || s.conditions.iter().any(|c| (c.type_ == "Progressing" || c.type_ == "Reconciling") && c.status == "True")
    })
}

impl SequencerAction {
    async fn reconcile(&self, ctx: &Context, now: Timestamp) -> Result<Action> {
        let namespace = self.namespace().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();

        if status.phase.is_terminal() {
            return self.expire(ctx, &namespace, &status, &now).await;
        }

        let operation = match self.spec.operation() {
            Ok(operation) => operation,
            Err(message) => {
                let input = Input::Abort { reason: Reason::InvalidSpec, message };
                return self.advance(ctx, input, &now).await;
            }
        };

        let created = self.meta().creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let remaining = i64::from(self.spec.deadline_seconds) - seconds_between(&created, &now);
        if remaining <= 0 {
            return self.advance(ctx, Input::DeadlinePassed, &now).await;
        }
        // Never sleep past the deadline: wake up in time to fail it.
        let until_deadline = Duration::from_secs(remaining as u64 + 1);
        let wait_requeue = WAIT_REQUEUE.min(until_deadline);

        // The target must serve.
        let sequencer_name = &self.spec.sequencer_ref.name;
        let sequencers: Api<Sequencer> = Api::namespaced(ctx.client.clone(), &namespace);
        let wait = |message: String| Input::Wait { reason: Reason::WaitingForSequencer, message };
        let sequencer = match sequencers.get_opt(sequencer_name).await? {
            None => {
                let input = wait(format!("Sequencer {sequencer_name} not found in {namespace}"));
                self.advance(ctx, input, &now).await?;
                return Ok(Action::requeue(wait_requeue));
            }
            Some(sequencer) => sequencer,
        };
        if sequencer.status.as_ref().map_or(0, |s| s.ready_replicas) == 0 {
            let input = wait(format!("waiting for Sequencer {sequencer_name} to have a ready replica"));
            self.advance(ctx, input, &now).await?;
            return Ok(Action::requeue(wait_requeue));
        }
        let client = match ctx.admin_client(&namespace, sequencer_name, &sequencer.spec.auth.admin_api_key_secret).await
        {
            Ok(client) => client,
            Err(why) => {
                self.advance(ctx, wait(why), &now).await?;
                return Ok(Action::requeue(wait_requeue));
            }
        };

        // Record the attempt, on the object this decision was made on; then make it.
        let running = match self.step(ctx, Input::Attempt, &now).await? {
            Step::Written(running) => running,
            Step::Lost { fresh, .. } => {
                info!(phase = ?fresh.phase(), "the action changed since it was read; not calling the admin API");
                return Ok(fresh.requeue_after_finish().unwrap_or(Action::requeue(CONFLICT_REQUEUE)));
            }
        };
        let attempts = running.status.as_ref().map_or(0, |s| s.attempts);
        if attempts == 1 {
            ctx.publish(
                &self.object_ref(&()),
                EventType::Normal,
                Reason::ActionStarted,
                "Run",
                format!("{} against Sequencer {sequencer_name}", operation.kind()),
            )
            .await;
        }
        let timeout = CALL_TIMEOUT_MAX.min(until_deadline);
        let input = call(&client, &operation, timeout, rolling(&sequencer)).await;
        let after = running.record_outcome(ctx, input, &Timestamp::now()).await?;
        Ok(match after.phase() {
            ActionPhase::Running => Action::requeue(retry_delay(attempts).min(until_deadline)),
            _ => after.requeue_after_finish().unwrap_or(Action::requeue(WAIT_REQUEUE)),
        })
    }

    /// The requeue of a finished action: at its TTL, or never when it has none.
    fn requeue_after_finish(&self) -> Option<Action> {
        if !self.phase().is_terminal() {
            return None;
        }
        Some(match self.spec.ttl_seconds_after_finished {
            Some(ttl) => Action::requeue(Duration::from_secs(ttl.into())),
            None => Action::await_change(),
        })
    }

    /// Applies `input` and requeues as its resulting phase asks.
    async fn advance(&self, ctx: &Context, input: Input, now: &Timestamp) -> Result<Action> {
        let stored = match self.step(ctx, input, now).await? {
            Step::Written(stored) => stored,
            Step::Lost { fresh, .. } => {
                return Ok(fresh.requeue_after_finish().unwrap_or(Action::requeue(CONFLICT_REQUEUE)));
            }
        };
        Ok(stored.requeue_after_finish().unwrap_or(Action::requeue(WAIT_REQUEUE)))
    }

    /// Writes the outcome of a call. A conflict reads the object again: a terminal phase found
    /// there is kept (never overwritten); otherwise the outcome is written on the fresh object.
    async fn record_outcome(&self, ctx: &Context, input: Input, now: &Timestamp) -> Result<SequencerAction> {
        let mut base = self.clone();
        let mut last_conflict = None;
        for _ in 0..OUTCOME_WRITES {
            match base.step(ctx, input.clone(), now).await? {
                Step::Written(stored) => return Ok(*stored),
                Step::Lost { fresh, .. } if fresh.phase().is_terminal() => {
                    warn!(phase = ?fresh.phase(), "the action was finished by another writer; its outcome is kept");
                    return Ok(*fresh);
                }
                Step::Lost { fresh, conflict } => {
                    last_conflict = Some(conflict);
                    base = *fresh;
                }
            }
        }
        Err(Error::Kube(last_conflict.expect("the loop ran at least once")))
    }

    /// Feeds `input` to the state machine on this object's status and, when the status changes,
    /// writes it with this object's resourceVersion as precondition; publishes an event when the
    /// action finishes.
    async fn step(&self, ctx: &Context, input: Input, now: &Timestamp) -> Result<Step> {
        let status = self.status.clone().unwrap_or_default();
        let next = action_state::next(&status, input, self.meta().generation, &Time(*now)).map_err(|refused| {
            Error::InvalidSpec { kind: "SequencerAction", name: self.name_any(), reason: refused.to_string() }
        })?;
        if next == status && self.status.is_some() {
            return Ok(Step::Written(Box::new(self.clone())));
        }
        let api: Api<SequencerAction> = Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        let mut object = self.clone();
        object.status = Some(next.clone());
        // NB: a PUT carries metadata.resourceVersion, which the API server checks (409 on mismatch).
        let stored = match api.replace_status(&self.name_any(), &PostParams::default(), &object).await {
            Ok(stored) => stored,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let fresh = api.get(&self.name_any()).await?;
                return Ok(Step::Lost { fresh: Box::new(fresh), conflict: kube::Error::Api(status) });
            }
            Err(error) => return Err(error.into()),
        };
        if next.phase.is_terminal() {
            self.announce_finish(ctx, &next).await;
        }
        Ok(Step::Written(Box::new(stored)))
    }

    async fn announce_finish(&self, ctx: &Context, status: &SequencerActionStatus) {
        let message = status.message.clone().unwrap_or_default();
        let (type_, reason) = match status.phase {
            ActionPhase::Succeeded => (EventType::Normal, Reason::ActionSucceeded),
            _ => (EventType::Warning, Reason::ActionFailed),
        };
        info!(phase = ?status.phase, %message, "action finished");
        ctx.publish(&self.object_ref(&()), type_, reason, "Run", message).await;
    }

    /// A finished action is kept until deleted; with `ttlSecondsAfterFinished` the operator deletes
    /// it that long after it finished (only this object: the delete is conditional on its UID).
    async fn expire(
        &self,
        ctx: &Context,
        namespace: &str,
        status: &SequencerActionStatus,
        now: &Timestamp,
    ) -> Result<Action> {
        let Some(ttl) = self.spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let finished = status.completion_time.as_ref().map(|t| t.0).unwrap_or(*now);
        let left = i64::from(ttl) - seconds_between(&finished, now);
        if left > 0 {
            return Ok(Action::requeue(Duration::from_secs(left as u64)));
        }
        let api: Api<SequencerAction> = Api::namespaced(ctx.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: self.uid(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&self.name_any(), &params).await {
            Ok(_) => info!("deleted after ttlSecondsAfterFinished"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Action::await_change())
    }
}

/// Makes the call `operation` asks for and turns the answer into the state machine's input.
async fn call(client: &AdminClient, operation: &Operation<'_>, timeout: Duration, sequencer_rolling: bool) -> Input {
    let answer = match operation {
        Operation::AnchorRetry(a) => client
            .anchor_retry(&a.batch_id, timeout)
            .await
            .map(|answer| action_state::anchor_outcome(&a.batch_id, answer)),
        Operation::DeadLetterReplay(d) => {
            let selector = match (&d.ids, &d.filter) {
                (Some(ids), _) => ReplaySelector::Ids(ids.clone()),
                (None, filter) => {
                    let filter = filter.clone().unwrap_or_default();
                    ReplaySelector::Filter(ReplayFilter {
                        tenant_id: filter.tenant_id,
                        store_id: filter.store_id,
                        reason: filter.reason,
                    })
                }
            };
            client.replay_dead_letters(&selector, timeout).await.map(action_state::replay_outcome)
        }
        Operation::VerifyStream(v) => client
            .verify_stream(&v.tenant_id, &v.store_id, v.receipt_keys.as_deref(), timeout)
            .await
            .map(action_state::verify_outcome),
        Operation::PauseStream(p) => client
            .pause_stream(&p.tenant_id, &p.store_id, p.reason.as_deref(), timeout)
            .await
            .map(|answer| action_state::stream_outcome(&p.tenant_id, &p.store_id, answer)),
        Operation::ResumeStream(r) => client
            .resume_stream(&r.tenant_id, &r.store_id, timeout)
            .await
            .map(|answer| action_state::stream_outcome(&r.tenant_id, &r.store_id, answer)),
        Operation::CorrectCommitment(c) => correct(client, &c.batch_id, &c.reason, timeout)
            .await
            .map(|answer| action_state::correction_outcome(&c.batch_id, answer)),
        Operation::DeadLetterPurge(p) => {
            let filter = PurgeFilter {
                status: p.status.as_str().to_string(),
                tenant_id: p.tenant_id.clone(),
                store_id: p.store_id.clone(),
                reason: p.reason.clone(),
            };
            client
                .purge_dead_letters(&filter, timeout)
                .await
                .map(|answer| action_state::purge_outcome(p.status.as_str(), answer))
        }
        Operation::VacuumAnalyze(v) => {
            let tables: Option<Vec<String>> =
                v.tables.as_ref().map(|tables| tables.iter().map(|t| t.as_str().to_string()).collect());
            client.vacuum(tables.as_deref(), timeout).await.map(action_state::maintenance_outcome)
        }
        Operation::TerminateIdleConnections(t) => client
            .terminate_idle_connections(t.idle_longer_than_seconds, timeout)
            .await
            .map(action_state::maintenance_outcome),
    };
    match answer {
        Ok(outcome) => Input::Finished(Box::new(outcome)),
        Err(error) => action_state::input_for_error(&error, sequencer_rolling),
    }
}

/// A correction; a 409 is looked into: the commitment may have been corrected already (by an
/// earlier attempt whose answer was lost), which is the outcome the action asks for.
async fn correct(
    client: &AdminClient,
    batch_id: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Correction, AdminError> {
    match client.correct_commitment(batch_id, reason, timeout).await {
        Ok(created) => Ok(Correction::Created(created)),
        Err(conflict @ AdminError::Api { status: 409, .. }) => {
            let bad = client.commitment(batch_id, timeout).await?;
            match bad.superseded_by {
                Some(_) => Ok(Correction::AlreadyCorrected(bad)),
                None => Err(conflict),
            }
        }
        Err(error) => Err(error),
    }
}

/// Pause before attempt `attempts + 1`: doubling from 5s, at most 60s.
fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(8);
    (RETRY_BASE * 2u32.pow(doublings)).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_five_seconds_to_a_minute() {
        let delays: Vec<u64> = (1..=6).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 60, 60]);
    }
}

#[cfg(test)]
pub(crate) mod reconcile_tests {
    //! Each action path against the mocked API server and a stub of the admin API.

    use serde_json::json;

    use super::*;
    use crate::crd::DeadLetterFilter;
    use crate::fixtures::*;

    async fn reconcile_in(action: SequencerAction, scenario: Scenario, admin_url: Option<String>) -> Result<Action> {
        let (ctx, api) = mocked_context(admin_url);
        let server = api.run(scenario);
        let result = reconcile(Arc::new(action), ctx).await;
        server.await.expect("the scenario's assertions hold");
        result
    }

    #[tokio::test]
    pub(crate) async fn an_anchor_retry_calls_the_admin_api_once_and_records_success() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/ves/anchor",
                200,
                json!({"batch_id": BATCH_ID, "status": "anchored", "chain_tx_hash": "0xfeed"}),
            )])
            .await;
        let action = SequencerAction::test();
        let requeue = reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(requeue, Action::await_change(), "without ttlSecondsAfterFinished a finished action is kept");
        let requests = stub.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1, format!("ApiKey {ADMIN_KEY}"));
        assert_eq!(requests[0].2, json!({"batch_id": BATCH_ID}));
    }

    #[tokio::test]
    async fn a_dead_letter_replay_by_ids_sends_the_ids_and_succeeds_when_all_are_sequenced() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/admin/dead-letters/retry",
                200,
                json!({"attempted": 1, "succeeded": 1, "failed": 0, "results": [{"id": BATCH_ID, "eventId": TENANT_ID, "outcome": "sequenced", "sequenceNumber": 42}]}),
            )])
            .await;
        let action = SequencerAction::test().replay_ids(&[BATCH_ID]);
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"ids": [BATCH_ID]}));
    }

    #[tokio::test]
    async fn a_dead_letter_replay_by_filter_that_is_rejected_again_fails() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/admin/dead-letters/retry",
                200,
                json!({"attempted": 2, "succeeded": 0, "failed": 2, "results": [
                    {"id": "a", "outcome": "rejected", "reason": "invalid_signature"},
                    {"id": "b", "outcome": "rejected", "reason": "invalid_signature"}]}),
            )])
            .await;
        let filter = DeadLetterFilter {
            tenant_id: Some(TENANT_ID.into()),
            reason: Some("invalid_signature".into()),
            ..Default::default()
        };
        let action = SequencerAction::test().replay_filter(filter);
        let scenario = Scenario::ActionRunsToFailure { action: action.clone(), reason: Reason::DeadLettersRejected };
        reconcile_in(action, scenario, Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"filter": {"tenantId": TENANT_ID, "reason": "invalid_signature"}}));
    }

    #[tokio::test]
    async fn a_stream_verification_with_findings_fails_as_stream_inconsistent() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/admin/verify",
                200,
                json!({"ok": false, "streamsChecked": 1, "eventsChecked": 10, "findings": [
                    {"kind": "gap", "tenantId": TENANT_ID, "storeId": STORE_ID, "sequenceNumber": 4, "detail": "4 is missing"}]}),
            )])
            .await;
        let action = SequencerAction::test().verify_stream();
        let scenario = Scenario::ActionRunsToFailure { action: action.clone(), reason: Reason::StreamInconsistent };
        reconcile_in(action, scenario, Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"tenantId": TENANT_ID, "storeId": STORE_ID}));
    }

    #[tokio::test]
    async fn a_clean_stream_verification_succeeds() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/admin/verify",
                200,
                json!({"ok": true, "streamsChecked": 1, "eventsChecked": 10, "findings": []}),
            )])
            .await;
        let action = SequencerAction::test().verify_stream();
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_verification_passes_its_pinned_receipt_keys_on() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/admin/verify",
                200,
                json!({"ok": true, "streamsChecked": 1, "eventsChecked": 10, "findings": [], "receiptKeysPinned": true}),
            )])
            .await;
        let key = "ab".repeat(32);
        let mut action = SequencerAction::test().verify_stream();
        action.spec.verify_stream.as_mut().unwrap().receipt_keys = Some(vec![key.clone()]);
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"tenantId": TENANT_ID, "storeId": STORE_ID, "receiptKeys": [key]}));
    }

    #[tokio::test]
    async fn an_unknown_batch_fails_the_anchor_retry_without_retrying() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/ves/anchor",
                404,
                json!({"error": {"code": "not_found", "message": "unknown batch"}}),
            )])
            .await;
        let action = SequencerAction::test();
        let scenario = Scenario::ActionRunsToFailure { action: action.clone(), reason: Reason::NotFound };
        reconcile_in(action, scenario, Some(url)).await.unwrap();
    }

    #[tokio::test]
    async fn an_open_circuit_breaker_keeps_the_anchor_retry_running_for_another_attempt() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                "/api/v1/ves/anchor",
                503,
                json!({"error": {"code": "circuit_open", "message": "anchoring paused"}}),
            )])
            .await;
        let action = SequencerAction::test();
        let requeue =
            reconcile_in(action.clone(), Scenario::ActionRetriesTransientFailure(action), Some(url)).await.unwrap();
        assert_eq!(requeue, Action::requeue(RETRY_BASE));
    }

    #[tokio::test]
    pub(crate) async fn an_action_against_a_missing_sequencer_waits_pending() {
        let action = SequencerAction::test();
        let requeue =
            reconcile_in(action.clone(), Scenario::ActionWaitsForMissingSequencer(action), None).await.unwrap();
        assert_eq!(requeue, Action::requeue(WAIT_REQUEUE));
    }

    #[tokio::test]
    async fn an_action_past_its_deadline_fails_without_calling_the_sequencer() {
        let action = SequencerAction::test().created_seconds_ago(3600);
        reconcile_in(action.clone(), Scenario::ActionPastDeadlineFails(action), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_succeeded_action_is_never_run_again_and_kept_without_a_ttl() {
        let action = SequencerAction::test().finished_seconds_ago(ActionPhase::Succeeded, 10);
        let requeue = reconcile_in(action, Scenario::FinishedActionIsLeftAlone, None).await.unwrap();
        assert_eq!(requeue, Action::await_change());
    }

    #[tokio::test]
    async fn a_succeeded_action_with_a_ttl_waits_out_the_rest_of_it() {
        let mut action = SequencerAction::test().finished_seconds_ago(ActionPhase::Succeeded, 10);
        action.spec.ttl_seconds_after_finished = Some(3600);
        let requeue = reconcile_in(action, Scenario::FinishedActionIsLeftAlone, None).await.unwrap();
        assert_eq!(requeue, Action::requeue(Duration::from_secs(3590)));
    }

    #[tokio::test]
    pub(crate) async fn a_finished_action_is_deleted_after_its_ttl_only_if_it_is_still_the_same_object() {
        let mut action = SequencerAction::test().finished_seconds_ago(ActionPhase::Failed, 90000);
        action.spec.ttl_seconds_after_finished = Some(86400);
        let requeue =
            reconcile_in(action.clone(), Scenario::FinishedActionPastTtlIsDeleted(action), None).await.unwrap();
        assert_eq!(requeue, Action::await_change());
    }

    fn conflict() -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the object has been modified; please apply your changes to the latest version and try again",
               "reason": "Conflict", "code": 409})
    }

    /// `action` as stored with `status` at resourceVersion `version`.
    fn stored(action: &SequencerAction, status: SequencerActionStatus, version: u64) -> SequencerAction {
        let mut stored = action.clone().with_status(status);
        stored.metadata.resource_version = Some(version.to_string());
        stored
    }

    #[tokio::test]
    pub(crate) async fn a_stale_running_object_delivered_after_the_terminal_write_makes_no_second_admin_call() {
        let stub = AdminStub::default();
        let url =
            stub.start(vec![("/api/v1/ves/anchor", 200, json!({"batch_id": BATCH_ID, "status": "anchored"}))]).await;
        let action = SequencerAction::test();

        // First reconcile: Running written at version 1 → 2, the call, Succeeded written at 2 → 3.
        let (ctx, mut api) = mocked_context(Some(url.clone()));
        let first = tokio::spawn(reconcile(Arc::new(action.clone()), ctx));
        api.target_ready().await;
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "1");
        let running: SequencerAction = serde_json::from_value(put.body.clone()).unwrap();
        let running = stored(&running, running.status.clone().unwrap(), 2);
        put.ok(&running);
        api.expect_event(Reason::ActionStarted).await;
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "2");
        let done: SequencerAction = serde_json::from_value(put.body.clone()).unwrap();
        let done = stored(&done, done.status.clone().unwrap(), 3);
        assert_eq!(done.phase(), ActionPhase::Succeeded);
        put.ok(&done);
        api.expect_event(Reason::ActionSucceeded).await;
        first.await.unwrap().unwrap();
        api.done().await;
        assert_eq!(stub.requests().len(), 1);

        // A lagging watch now delivers the Running object of version 2: the attempt write is refused
        // by the precondition, the object is read again, found Succeeded, and nothing is called.
        let (ctx, mut api) = mocked_context(Some(url));
        let second = tokio::spawn(reconcile(Arc::new(running.clone()), ctx));
        api.target_ready().await;
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "2");
        put.reply(409, &conflict());
        api.expect(http::Method::GET, &path("action", "retry-anchor")).await.ok(&done);
        let requeue = second.await.unwrap().unwrap();
        api.done().await;

        assert_eq!(requeue, Action::await_change());
        assert_eq!(stub.requests().len(), 1, "exactly one admin call: {:?}", stub.requests());
    }

    #[tokio::test]
    async fn a_conflicting_outcome_write_never_overwrites_a_terminal_phase_found_on_reread() {
        let stub = AdminStub::default();
        let url =
            stub.start(vec![("/api/v1/ves/anchor", 200, json!({"batch_id": BATCH_ID, "status": "anchored"}))]).await;
        let action = SequencerAction::test();
        let (ctx, mut api) = mocked_context(Some(url));
        let run = tokio::spawn(reconcile(Arc::new(action.clone()), ctx));
        api.target_ready().await;
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        let running: SequencerAction = serde_json::from_value(put.body.clone()).unwrap();
        put.ok(&stored(&running, running.status.clone().unwrap(), 2));
        api.expect_event(Reason::ActionStarted).await;
        // Meanwhile something else finished the action (say an older operator replica, at its deadline).
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        put.reply(409, &conflict());
        let failed = SequencerActionStatus {
            phase: ActionPhase::Failed,
            message: Some("the deadline passed".into()),
            ..running.status.clone().unwrap()
        };
        api.expect(http::Method::GET, &path("action", "retry-anchor")).await.ok(&stored(&action, failed, 4));
        let requeue = run.await.unwrap().unwrap();
        api.done().await;
        assert_eq!(requeue, Action::await_change());
    }

    #[tokio::test]
    pub(crate) async fn a_conflicting_outcome_write_on_a_still_running_action_is_written_on_the_fresh_object() {
        let stub = AdminStub::default();
        let url =
            stub.start(vec![("/api/v1/ves/anchor", 200, json!({"batch_id": BATCH_ID, "status": "anchored"}))]).await;
        let action = SequencerAction::test();
        let (ctx, mut api) = mocked_context(Some(url));
        let run = tokio::spawn(reconcile(Arc::new(action.clone()), ctx));
        api.target_ready().await;
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        let running: SequencerAction = serde_json::from_value(put.body.clone()).unwrap();
        let running = stored(&running, running.status.clone().unwrap(), 2);
        put.ok(&running);
        api.expect_event(Reason::ActionStarted).await;
        // A label was added meanwhile: version 5, still Running.
        api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor")))
            .await
            .reply(409, &conflict());
        let relabelled = stored(&running, running.status.clone().unwrap(), 5);
        api.expect(http::Method::GET, &path("action", "retry-anchor")).await.ok(&relabelled);
        let put = api.expect(http::Method::PUT, &format!("{}/status", path("action", "retry-anchor"))).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "5");
        assert_eq!(put.body["status"]["phase"], "Succeeded");
        let body = put.body.clone();
        put.reply(200, &body);
        api.expect_event(Reason::ActionSucceeded).await;
        run.await.unwrap().unwrap();
        api.done().await;
        assert_eq!(stub.requests().len(), 1);
    }

    #[tokio::test]
    async fn after_an_admin_key_rotation_an_action_reaches_pods_that_still_run_the_old_key() {
        use axum::http::{HeaderMap, StatusCode};
        const NEW_KEY: &str = "ss_fixture_admin_key_rotated";
        // Pods not rolled yet: they accept only the old key.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let router = axum::Router::new().route(
            "/api/v1/ves/anchor",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap| async move {
                    let auth = headers["authorization"].to_str().unwrap().to_string();
                    seen.lock().unwrap().push(auth.clone());
                    if auth == format!("ApiKey {ADMIN_KEY}") {
                        (StatusCode::OK, axum::Json(json!({"batch_id": BATCH_ID, "status": "anchored"})))
                    } else {
                        let body = json!({"error": {"code": "INVALID_API_KEY", "message": "Invalid API key"}});
                        (StatusCode::UNAUTHORIZED, axum::Json(body))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let (ctx, mut api) = mocked_context(Some(url));
        // The operator read the old key before (its status poll) ...
        let key_ref = crate::crd::SecretKeyRef::new(ADMIN_KEY_SECRET, "key");
        let poll = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.admin_client(NAMESPACE, NAME, &key_ref).await.map(|_| ()) }
        });
        api.expect(http::Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&admin_key_secret());
        poll.await.unwrap().unwrap();
        // ... then the Secret was rotated; the action reads the new key.
        let action = SequencerAction::test();
        let run = tokio::spawn(reconcile(Arc::new(action.clone()), ctx));
        let ready =
            Sequencer::test().with_status(crate::crd::SequencerStatus { ready_replicas: 1, ..Default::default() });
        api.expect(http::Method::GET, &path("sequencer", NAME)).await.ok(&ready);
        let mut rotated = admin_key_secret();
        rotated.data = Some([("key".to_string(), k8s_openapi::ByteString(NEW_KEY.as_bytes().to_vec()))].into());
        api.expect(http::Method::GET, &path("secret", ADMIN_KEY_SECRET)).await.ok(&rotated);
        api.action_status_written(&action).await;
        api.expect_event(Reason::ActionStarted).await;
        let done = api.action_status_written(&action).await;
        api.expect_event(Reason::ActionSucceeded).await;
        run.await.unwrap().unwrap();
        api.done().await;

        assert_eq!(done.phase, ActionPhase::Succeeded, "{:?}", done.message);
        assert_eq!(*seen.lock().unwrap(), vec![format!("ApiKey {NEW_KEY}"), format!("ApiKey {ADMIN_KEY}")]);
    }

    /// The fixture action with `operation` (camelCase JSON of one spec member) instead of anchorRetry.
    fn action_with(name: &str, operation: serde_json::Value) -> SequencerAction {
        let mut action = SequencerAction::test();
        action.metadata.name = Some(name.into());
        let mut spec = serde_json::to_value(&action.spec).unwrap();
        spec.as_object_mut().unwrap().remove("anchorRetry");
        spec.as_object_mut().unwrap().extend(operation.as_object().unwrap().clone());
        action.spec = serde_json::from_value(spec).unwrap();
        action
    }

    #[tokio::test]
    async fn a_pause_stream_posts_the_reason_to_the_streams_pause_route() {
        let route: &'static str =
            Box::leak(format!("/api/v1/admin/streams/{TENANT_ID}/{STORE_ID}/pause").into_boxed_str());
        let stub = AdminStub::default();
        let url = stub
            .start(vec![(
                route,
                200,
                json!({"tenantId": TENANT_ID, "storeId": STORE_ID, "paused": true, "reason": "gap"}),
            )])
            .await;
        let action = action_with(
            "pause",
            json!({"pauseStream": {"tenantId": TENANT_ID, "storeId": STORE_ID, "reason": "sequence gap at 41"}}),
        );
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].0, route);
        assert_eq!(stub.requests()[0].2, json!({"reason": "sequence gap at 41"}));
    }

    #[tokio::test]
    async fn a_resume_stream_posts_to_the_streams_resume_route() {
        let route: &'static str =
            Box::leak(format!("/api/v1/admin/streams/{TENANT_ID}/{STORE_ID}/resume").into_boxed_str());
        let stub = AdminStub::default();
        let url = stub.start(vec![(route, 200, json!({"paused": false}))]).await;
        let action = action_with("resume", json!({"resumeStream": {"tenantId": TENANT_ID, "storeId": STORE_ID}}));
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].0, route);
    }

    #[tokio::test]
    async fn a_correct_commitment_posts_the_reason_and_records_the_correction() {
        let route: &'static str = Box::leak(format!("/api/v1/ves/commitments/{BATCH_ID}/correct").into_boxed_str());
        let stub = AdminStub::default();
        let url = stub.start(vec![(route, 200, json!({"batch_id": STORE_ID, "corrects_batch_id": BATCH_ID}))]).await;
        let action =
            action_with("correct", json!({"correctCommitment": {"batchId": BATCH_ID, "reason": "wrong state root"}}));
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"reason": "wrong state root"}));
    }

    #[tokio::test]
    async fn a_correction_answered_409_succeeds_when_the_commitment_is_corrected_already() {
        let route: &'static str = Box::leak(format!("/api/v1/ves/commitments/{BATCH_ID}/correct").into_boxed_str());
        let read: &'static str = Box::leak(format!("/api/v1/ves/commitments/{BATCH_ID}").into_boxed_str());
        let stub = AdminStub::default();
        let url = stub
            .start(vec![
                (route, 409, json!({"error": {"code": "ALREADY_EXISTS", "message": "already corrected"}})),
                (read, 200, json!({"batch_id": BATCH_ID, "superseded_by": STORE_ID})),
            ])
            .await;
        let action = action_with("correct", json!({"correctCommitment": {"batchId": BATCH_ID, "reason": "bad"}}));
        let (ctx, api) = mocked_context(Some(url));
        let server = tokio::spawn(async move {
            let mut api = api;
            api.target_ready().await;
            api.action_status_written(&action_with(
                "correct",
                json!({"correctCommitment": {"batchId": BATCH_ID, "reason": "bad"}}),
            ))
            .await;
            api.expect_event(Reason::ActionStarted).await;
            let done = api
                .action_status_written(&action_with(
                    "correct",
                    json!({"correctCommitment": {"batchId": BATCH_ID, "reason": "bad"}}),
                ))
                .await;
            api.expect_event(Reason::ActionSucceeded).await;
            api.done().await;
            done
        });
        reconcile(Arc::new(action), ctx).await.unwrap();
        let done = server.await.unwrap();
        assert_eq!(done.phase, ActionPhase::Succeeded);
        assert!(done.message.unwrap().contains("already corrected"));
        assert_eq!(done.result.unwrap().correction.unwrap().correction_batch_id.as_deref(), Some(STORE_ID));
    }

    #[tokio::test]
    async fn a_dead_letter_purge_sends_the_status_and_filter() {
        let stub = AdminStub::default();
        let url = stub.start(vec![("/api/v1/admin/dead-letters/purge", 200, json!({"deleted": 3}))]).await;
        let action = action_with("purge", json!({"deadLetterPurge": {"tenantId": TENANT_ID}}));
        reconcile_in(action.clone(), Scenario::ActionRunsToSuccess(action), Some(url)).await.unwrap();
        assert_eq!(stub.requests()[0].2, json!({"status": "resolved", "tenantId": TENANT_ID}));
    }

    #[tokio::test]
    async fn maintenance_actions_post_to_the_maintenance_routes() {
        let stub = AdminStub::default();
        let url = stub
            .start(vec![
                ("/api/v1/admin/maintenance/vacuum", 200, json!({"tables": ["events", "ves_events", "commitments"]})),
                ("/api/v1/admin/maintenance/terminate-idle-connections", 200, json!({"terminated": 2})),
            ])
            .await;
        let vacuum = action_with("vacuum", json!({"vacuumAnalyze": {}}));
        reconcile_in(vacuum.clone(), Scenario::ActionRunsToSuccess(vacuum), Some(url.clone())).await.unwrap();
        let terminate = action_with("idle", json!({"terminateIdleConnections": {"idleLongerThanSeconds": 600}}));
        reconcile_in(terminate.clone(), Scenario::ActionRunsToSuccess(terminate), Some(url)).await.unwrap();
        let bodies: Vec<_> = stub.requests().into_iter().map(|r| r.2).collect();
        assert_eq!(bodies, vec![json!({"tables": null}), json!({"idleLongerThanSeconds": 600})]);
    }
}
