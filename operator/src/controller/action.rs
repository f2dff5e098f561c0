//! Reconcile of a `SequencerAction`: wait for the Sequencer, call its admin API once, record the
//! outcome, delete the action after its TTL.
//!
//! The phase decides: a finished action (Succeeded or Failed) is never called again, only
//! expired. Before each call the attempt is recorded in status (phase Running), so the call is
//! visible and counted even if the operator dies during it. While Running, transient failures are
//! retried with backoff until the deadline; the three operations are idempotent on the sequencer's
//! side (a re-sent anchor answers already_anchored, replayed dead letters are gone, verification
//! only reads).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::Context;
use crate::action_state::{self, Input};
use crate::admin::{AdminClient, ReplayFilter, ReplaySelector};
use crate::conditions::Reason;
use crate::crd::{ActionPhase, Operation, Sequencer, SequencerAction, SequencerActionStatus};
use crate::labels::FIELD_MANAGER;
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
                return self.advance(ctx, &status, input, &now).await;
            }
        };

        let created = self.meta().creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let remaining = i64::from(self.spec.deadline_seconds) - seconds_between(&created, &now);
        if remaining <= 0 {
            return self.advance(ctx, &status, Input::DeadlinePassed, &now).await;
        }
        // Never sleep past the deadline: wake up in time to fail it.
        let until_deadline = Duration::from_secs(remaining as u64 + 1);

        // The target must serve.
        let sequencer_name = &self.spec.sequencer_ref.name;
        let sequencers: Api<Sequencer> = Api::namespaced(ctx.client.clone(), &namespace);
        let wait = |message: String| Input::Wait { reason: Reason::WaitingForSequencer, message };
        let sequencer = match sequencers.get_opt(sequencer_name).await? {
            None => {
                let input = wait(format!("Sequencer {sequencer_name} not found in {namespace}"));
                self.advance(ctx, &status, input, &now).await?;
                return Ok(Action::requeue(WAIT_REQUEUE.min(until_deadline)));
            }
            Some(sequencer) => sequencer,
        };
        if sequencer.status.as_ref().map_or(0, |s| s.ready_replicas) == 0 {
            let input = wait(format!("waiting for Sequencer {sequencer_name} to have a ready replica"));
            self.advance(ctx, &status, input, &now).await?;
            return Ok(Action::requeue(WAIT_REQUEUE.min(until_deadline)));
        }
        let client = match ctx.admin_client(&namespace, sequencer_name, &sequencer.spec.auth.admin_api_key_secret).await
        {
            Ok(client) => client,
            Err(why) => {
                self.advance(ctx, &status, wait(why), &now).await?;
                return Ok(Action::requeue(WAIT_REQUEUE.min(until_deadline)));
            }
        };

        // Record the attempt, then make it.
        let running = self.advance_status(ctx, &status, Input::Attempt, &now).await?;
        if running.attempts == 1 {
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
        let input = call(&client, &operation, timeout).await;
        let retry_after = retry_delay(running.attempts).min(until_deadline);
        let after = self.advance_status(ctx, &running, input, &Timestamp::now()).await?;
        Ok(match after.phase {
            ActionPhase::Running => Action::requeue(retry_after),
            _ => Action::requeue(Duration::from_secs(self.spec.ttl_seconds_after_finished.into())),
        })
    }

    /// Applies `input` and requeues as its resulting phase asks.
    async fn advance(
        &self,
        ctx: &Context,
        status: &SequencerActionStatus,
        input: Input,
        now: &Timestamp,
    ) -> Result<Action> {
        let next = self.advance_status(ctx, status, input, now).await?;
        Ok(if next.phase.is_terminal() {
            Action::requeue(Duration::from_secs(self.spec.ttl_seconds_after_finished.into()))
        } else {
            Action::requeue(WAIT_REQUEUE)
        })
    }

    /// Feeds `input` to the state machine and writes the resulting status when it changed;
    /// publishes an event when the action finishes.
    async fn advance_status(
        &self,
        ctx: &Context,
        status: &SequencerActionStatus,
        input: Input,
        now: &Timestamp,
    ) -> Result<SequencerActionStatus> {
        let next = action_state::next(status, input, self.meta().generation, &Time(*now)).map_err(|refused| {
            Error::InvalidSpec { kind: "SequencerAction", name: self.name_any(), reason: refused.to_string() }
        })?;
        if &next == status && self.status.is_some() {
            return Ok(next);
        }
        let api: Api<SequencerAction> = Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": SequencerAction::api_version(&()),
            "kind": SequencerAction::kind(&()),
            "status": next,
        });
        api.patch_status(&self.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        if next.phase.is_terminal() {
            let message = next.message.clone().unwrap_or_default();
            let (type_, reason) = match next.phase {
                ActionPhase::Succeeded => (EventType::Normal, Reason::ActionSucceeded),
                _ => (EventType::Warning, Reason::ActionFailed),
            };
            info!(phase = ?next.phase, %message, "action finished");
            ctx.publish(&self.object_ref(&()), type_, reason, "Run", message).await;
        }
        Ok(next)
    }

    /// A finished action lives `ttlSecondsAfterFinished`, then is deleted.
    async fn expire(
        &self,
        ctx: &Context,
        namespace: &str,
        status: &SequencerActionStatus,
        now: &Timestamp,
    ) -> Result<Action> {
        let finished = status.completion_time.as_ref().map(|t| t.0).unwrap_or(*now);
        let left = i64::from(self.spec.ttl_seconds_after_finished) - seconds_between(&finished, now);
        if left > 0 {
            return Ok(Action::requeue(Duration::from_secs(left as u64)));
        }
        let api: Api<SequencerAction> = Api::namespaced(ctx.client.clone(), namespace);
        match api.delete(&self.name_any(), &Default::default()).await {
            Ok(_) => info!("deleted after ttlSecondsAfterFinished"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Action::await_change())
    }
}

/// Makes the call `operation` asks for and turns the answer into the state machine's input.
async fn call(client: &AdminClient, operation: &Operation<'_>, timeout: Duration) -> Input {
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
        Operation::VerifyStream(v) => {
            client.verify_stream(&v.tenant_id, &v.store_id, timeout).await.map(action_state::verify_outcome)
        }
    };
    match answer {
        Ok(outcome) => Input::Finished(outcome),
        Err(error) => action_state::input_for_error(&error),
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
mod reconcile_tests {
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
    async fn an_anchor_retry_calls_the_admin_api_once_and_records_success() {
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
        assert_eq!(requeue, Action::requeue(Duration::from_secs(86400)));
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
    async fn an_action_against_a_missing_sequencer_waits_pending() {
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
    async fn a_succeeded_action_is_never_run_again() {
        let action = SequencerAction::test().finished_seconds_ago(ActionPhase::Succeeded, 10);
        let requeue = reconcile_in(action, Scenario::FinishedActionIsLeftAlone, None).await.unwrap();
        assert_eq!(requeue, Action::requeue(Duration::from_secs(86390)));
    }

    #[tokio::test]
    async fn a_finished_action_is_deleted_after_its_ttl() {
        let action = SequencerAction::test().finished_seconds_ago(ActionPhase::Failed, 90000);
        let requeue =
            reconcile_in(action.clone(), Scenario::FinishedActionPastTtlIsDeleted(action), None).await.unwrap();
        assert_eq!(requeue, Action::await_change());
    }
}
