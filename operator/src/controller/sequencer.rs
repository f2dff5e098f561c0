//! Reconcile of a `Sequencer`: migrations gate, children by server-side apply, admin status, status.
//!
//! Order of one reconcile (each step's requests are fixed, which the mocked API-server tests pin):
//! 1. read the Deployment, to learn which image runs now (and that it is ours);
//! 2. read the referenced Secrets, for the pod template's secrets hash;
//! 3. ServiceAccount and ConfigMap (what a migration Job needs): read, check they are ours, apply;
//! 4. in Job mode with a new image: read (or create, or replace after a failure) its migration Job;
//! 5. Service and PodDisruptionBudget the same way (or delete a PDB of ours no longer wanted);
//!    then the Deployment on the image the migrations allow (the old one while a Job runs or after
//!    it failed);
//! 6. after a rollout past a migration: delete migration Jobs of older images that are ours;
//! 7. read the admin status when a replica is ready and the last read is `statusPollSeconds` old;
//! 8. write status when it changed, and publish events for transitions.
//!
//! A child that exists under the same name without this Sequencer as its controller is never
//! written, adopted or deleted: the reconcile stops with `NameConflict`. Every failure reaches
//! status (`Ready=False`, and `Stalled=True` when it will not resolve by itself).
//!
//! There is no finalizer: children carry a controller owner reference and the garbage collector
//! removes them with the Sequencer. A Sequencer being deleted is left alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::{Context, ensure_controlled};
use crate::conditions::{
    self, AdminState, ConditionType, DeploymentState, MigrationState, MonitoringState, Reason, SequencerObservation,
    Status,
};
use crate::crd::{AdminStatusSummary, MigrationStatus, MigrationsMode, Sequencer, SequencerStatus};
use crate::labels::{COMPONENT_MIGRATIONS, COMPONENT_SERVER, FIELD_MANAGER, LABEL_COMPONENT, LABEL_INSTANCE};
use crate::metrics::Controller;
use crate::resources::{self, Names};
use crate::{Error, Result};

/// How long the operator waits for the admin status.
pub const ADMIN_STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Requeue after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(30);
/// First pause before a failed migration Job is replaced; it doubles per attempt up to the cap.
const MIGRATION_RETRY_BASE: Duration = Duration::from_secs(30);
const MIGRATION_RETRY_CAP: Duration = Duration::from_secs(600);

/// Entry point of the controller: measures, skips deleted objects, reports failures in status
/// and as events.
#[instrument(skip_all, fields(sequencer = %seq.name_any(), namespace = seq.namespace().unwrap_or_default()))]
pub async fn reconcile(seq: Arc<Sequencer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(Controller::sequencer);
    if seq.meta().deletion_timestamp.is_some() {
        debug!("being deleted; the garbage collector removes the children");
        return Ok(Action::await_change());
    }
    let result = seq.reconcile(&ctx).await;
    if let Err(error) = &result {
        let (reason, message) = error.status_reason();
        ctx.publish(&seq.object_ref(&()), EventType::Warning, reason, "Reconcile", message).await;
        seq.report_failure(&ctx, error).await;
    }
    result
}

/// Requeues a failed reconcile after a pause and counts the failure.
pub fn error_policy(seq: Arc<Sequencer>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(sequencer = %seq.name_any(), %error, "reconcile failed");
    ctx.metrics.failure(Controller::sequencer, error);
    Action::requeue(ERROR_REQUEUE)
}

/// Whether the admin status is due: never read, or last read at least `poll` ago (less a second,
/// so that the requeue timer, which fires after `poll`, always finds it due).
pub fn admin_read_due(last: Option<Instant>, now: Instant, poll: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) + Duration::from_secs(1) >= poll)
}

/// When a failed migration Job of attempt `attempt` (1-based) is replaced: 30 s, doubling, at most
/// 10 minutes after it failed.
pub fn migration_retry_delay(attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(10);
    (MIGRATION_RETRY_BASE * 2u32.pow(doublings)).min(MIGRATION_RETRY_CAP)
}

impl Sequencer {
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace().ok_or_else(|| Error::InvalidSpec {
            kind: "Sequencer",
            name: self.name_any(),
            reason: "has no namespace".into(),
        })?;
        let name = self.name_any();
        let uid = self.uid().ok_or_else(|| Error::InvalidSpec {
            kind: "Sequencer",
            name: name.clone(),
            reason: "has no uid (was it stored?)".into(),
        })?;
        let regarding = self.object_ref(&());

        // 1. What runs now, and whether it is ours.
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let live = deployments.get_opt(&name).await?;
        if let Some(live) = &live {
            ensure_controlled(live, &uid)?;
        }
        let live_image = live.as_ref().and_then(resources::sequencer_container_image);

        // 2. The referenced Secrets, hashed into the pod template.
        let secrets_hash = self.secrets_hash(ctx, &namespace).await?;

        // 3. What a migration Job needs exists before it: its ServiceAccount and the ConfigMap.
        let children = resources::children(self, None, false);
        ctx.apply_owned(&children.service_account, &uid).await?;
        ctx.apply_owned(&children.config_map, &uid).await?;

        // 4. Migrations gate the image.
        let (migration, retry_in) = self.migration_state(ctx, &namespace, &uid, live_image.as_deref()).await?;
        let deploy_image = if migration.allows_rollout() { Some(self.spec.image.clone()) } else { live_image.clone() };

        // 5. The other children, each only if it is ours (or absent).
        let mut children = resources::children(self, deploy_image.as_deref(), false);
        ctx.apply_owned(&children.service, &uid).await?;
        let monitoring = self.reconcile_pod_monitor(ctx, &namespace, &uid).await?;
        self.reconcile_pod_disruption_budget(ctx, &namespace, &uid, children.pod_disruption_budget.as_ref()).await?;
        let deployment = match children.deployment.as_mut() {
            Some(deployment) => {
                resources::stamp_secrets_hash(deployment, &secrets_hash);
                Some(ctx.apply(&*deployment).await?)
            }
            None => None,
        };

        // 6. A rollout past a migration: record it, and drop Jobs of older images.
        let rolled_to_new_image = deploy_image.is_some() && live_image.is_some() && deploy_image != live_image;
        if let MigrationState::Succeeded { job } = &migration {
            if self.status.as_ref().and_then(|s| s.current_image.as_deref()) != Some(self.spec.image.as_str()) {
                ctx.publish(
                    &regarding,
                    EventType::Normal,
                    Reason::MigrationJobSucceeded,
                    "Migrate",
                    format!("Job {job} applied the migrations of {}", self.spec.image),
                )
                .await;
            }
            self.delete_superseded_migration_jobs(ctx, &namespace, job).await?;
        }
        if rolled_to_new_image {
            info!(from = ?live_image, to = %self.spec.image, "rolling out a new image");
            ctx.publish(
                &regarding,
                EventType::Normal,
                Reason::ImageRolledOut,
                "Rollout",
                format!("rolling out {} (was {})", self.spec.image, live_image.as_deref().unwrap_or("nothing")),
            )
            .await;
        }

        // 7. Admin status, from a ready replica, at most every statusPollSeconds.
        let deployment_state = deployment.as_ref().map(deployment_state);
        let admin = match &deployment_state {
            Some(d) if d.ready_replicas > 0 => self.admin_status(ctx, &namespace).await,
            _ => AdminState::NotRead,
        };

        // 8. Status and transition events.
        let seen = SequencerObservation { deployment: deployment_state, migration, admin, monitoring };
        let status = self.next_status(&seen, &Time(Timestamp::now()));
        self.write_status(ctx, status).await?;
        let poll = Duration::from_secs(self.spec.monitoring.status_poll_seconds.into());
        Ok(Action::requeue(retry_in.map_or(poll, |retry| retry.min(poll))))
    }

    /// Writes `status` when it differs from the stored one, publishing events for transitions.
    async fn write_status(&self, ctx: &Context, status: SequencerStatus) -> Result<()> {
        if self.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.publish_transitions(ctx, &status).await;
        let api: Api<Sequencer> = Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": Sequencer::api_version(&()),
            "kind": Sequencer::kind(&()),
            "status": status,
        });
        api.patch_status(&self.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        Ok(())
    }

    /// Writes what a failed reconcile means into status: `Ready=False` with the error's reason and
    /// message, `Reconciling` or `Stalled`, the other conditions as last seen. Best effort: a
    /// failure to write is logged (the error itself is already returned and counted).
    async fn report_failure(&self, ctx: &Context, error: &Error) {
        let status = self.failed_status(error, &Time(Timestamp::now()));
        if let Err(write_error) = self.write_status(ctx, status).await {
            warn!(%write_error, "writing the failure into status failed");
        }
    }

    /// The status after a reconcile failed with `error`. Pure.
    pub fn failed_status(&self, error: &Error, now: &Time) -> SequencerStatus {
        let previous = self.status.clone().unwrap_or_default();
        let generation = self.meta().generation;
        let (reason, message) = error.status_reason();
        SequencerStatus {
            observed_generation: generation,
            conditions: conditions::settle_over(
                &previous.conditions,
                conditions::failed_reconcile(reason, message),
                generation,
                now,
            ),
            ..previous
        }
    }

    /// Applies the PodMonitor when `spec.monitoring.podMonitor` asks for one (read first: one of
    /// someone else is never written). Without the monitoring.coreos.com CRDs the API server
    /// answers 404 to the apply: that is reported (condition and Warning event), never a failure.
    async fn reconcile_pod_monitor(&self, ctx: &Context, namespace: &str, uid: &str) -> Result<MonitoringState> {
        let Some(pod_monitor) = resources::pod_monitor(self) else { return Ok(MonitoringState::Disabled) };
        let resource = resources::pod_monitor_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
        let absent = |error: &kube::Error| matches!(error, kube::Error::Api(status) if status.code == 404);
        match api.get_opt(&pod_monitor.name_any()).await {
            Ok(Some(existing)) if !resources::is_controlled_by(&existing.metadata, uid) => {
                return Err(Error::NameConflict {
                    kind: "PodMonitor".into(),
                    namespace: namespace.to_string(),
                    name: pod_monitor.name_any(),
                    controller: resources::describe_controller(&existing.metadata),
                });
            }
            Ok(_) => {}
            Err(error) if absent(&error) => {}
            Err(error) => return Err(error.into()),
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&pod_monitor.name_any(), &params, &Patch::Apply(&pod_monitor)).await {
            Ok(_) => Ok(MonitoringState::Applied),
            Err(error) if absent(&error) => {
                if self
                    .condition(ConditionType::MonitoringReady.as_str())
                    .is_none_or(|c| c.reason != Reason::MonitoringCrdsAbsent.as_str())
                {
                    ctx.publish(
                        &self.object_ref(&()),
                        EventType::Warning,
                        Reason::MonitoringCrdsAbsent,
                        "Monitor",
                        "spec.monitoring.podMonitor is enabled but the monitoring.coreos.com CRDs are not installed"
                            .into(),
                    )
                    .await;
                }
                Ok(MonitoringState::CrdsAbsent)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// SHA-256 over the referenced Secret keys' values (see [`resources::secrets_hash`]).
    async fn secrets_hash(&self, ctx: &Context, namespace: &str) -> Result<String> {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        let mut read = std::collections::BTreeMap::new();
        for name in self.referenced_secrets() {
            read.insert(name.clone(), api.get_opt(&name).await?);
        }
        Ok(resources::secrets_hash(self, |reference| {
            let secret = read.get(&reference.name)?.as_ref()?;
            secret.data.as_ref()?.get(&reference.key).map(|value| value.0.clone())
        }))
    }

    /// Applies the PodDisruptionBudget when wanted; deletes it when not wanted and it is ours
    /// (owner UID and every label), with a UID precondition. Reads it first: nothing is deleted
    /// on a reconcile that finds no budget, and a budget of someone else is never touched.
    async fn reconcile_pod_disruption_budget(
        &self,
        ctx: &Context,
        namespace: &str,
        uid: &str,
        wanted: Option<&PodDisruptionBudget>,
    ) -> Result<()> {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), namespace);
        let name = Names(&self.name_any()).workload();
        let existing = api.get_opt(&name).await?;
        match (wanted, existing) {
            (Some(pdb), existing) => {
                if let Some(existing) = &existing {
                    ensure_controlled(existing, uid)?;
                }
                ctx.apply(pdb).await?;
            }
            (None, Some(existing)) if resources::is_own_child(existing.meta(), self, COMPONENT_SERVER) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions { uid: existing.uid(), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => info!(pdb = %name, "deleted the PodDisruptionBudget (one replica or fewer)"),
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// The admin status: read when due (see [`admin_read_due`]), else the last read from memory.
    async fn admin_status(&self, ctx: &Context, namespace: &str) -> AdminState {
        let key = format!("{namespace}/{}", self.name_any());
        let poll = Duration::from_secs(self.spec.monitoring.status_poll_seconds.into());
        let now = Instant::now();
        let cached = ctx.admin_reads.lock().expect("admin read cache").get(&key).cloned();
        if let Some((at, state)) = &cached
            && !admin_read_due(Some(*at), now, poll)
        {
            return state.clone();
        }
        let state = self.read_admin_status(ctx, namespace).await;
        ctx.admin_reads.lock().expect("admin read cache").insert(key, (now, state.clone()));
        state
    }

    /// Where migrations stand for `spec.image`, and when to look again for a retry. In Job mode,
    /// creates the image's Job when missing (attempt 1, or the next attempt after a failed one was
    /// removed), and removes a failed Job once its backoff passed while attempts remain.
    async fn migration_state(
        &self,
        ctx: &Context,
        namespace: &str,
        uid: &str,
        live_image: Option<&str>,
    ) -> Result<(MigrationState, Option<Duration>)> {
        match self.spec.migrations.mode {
            MigrationsMode::OnStartup => return Ok((MigrationState::OnStartup, None)),
            MigrationsMode::Disabled => return Ok((MigrationState::Disabled, None)),
            MigrationsMode::Job => {}
        }
        if live_image == Some(self.spec.image.as_str()) {
            return Ok((MigrationState::UpToDate, None));
        }
        let job_name = Names(&self.name_any()).migration_job(&self.spec.image);
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
        let attempts_so_far = self.migration_attempts();
        let max_attempts = 1 + self.spec.migrations.retries.max(0);
        // NB: read before apply: a Job's pod template is immutable, so re-applying a Job after a
        // change of, say, resources would be refused. A Job is created once per image and attempt.
        let Some(job) = jobs.get_opt(&job_name).await? else {
            let attempt = attempts_so_far + 1;
            ctx.apply(&resources::migration_job(self)).await?;
            info!(job = %job_name, image = %self.spec.image, attempt, "migration Job created");
            ctx.publish(
                &self.object_ref(&()),
                EventType::Normal,
                Reason::MigrationJobCreated,
                "Migrate",
                format!(
                    "Job {job_name} migrates the database for {} (attempt {attempt} of {max_attempts})",
                    self.spec.image
                ),
            )
            .await;
            return Ok((MigrationState::Running { job: job_name, attempt }, None));
        };
        ensure_controlled(&job, uid)?;
        let attempt = attempts_so_far.max(1);
        let state = conditions::migration_state_of(&job_name, &job, attempt, max_attempts);
        let mut retry_in = None;
        if let MigrationState::Failed { job: failed, reason, message, will_retry, .. } = &state {
            let reported_reason = if *will_retry { Reason::MigrationJobRetrying } else { Reason::MigrationJobFailed };
            let already_reported = self
                .condition(ConditionType::MigrationsApplied.as_str())
                .is_some_and(|c| c.reason == reported_reason.as_str());
            if !already_reported {
                warn!(job = %failed, reason = %reason, attempt, max_attempts, "migration Job failed; keeping the running Deployment");
                ctx.publish(
                    &self.object_ref(&()),
                    EventType::Warning,
                    Reason::MigrationJobFailed,
                    "Migrate",
                    format!("Job {failed} failed ({reason}: {message}), attempt {attempt} of {max_attempts}; the Deployment keeps its current image"),
                )
                .await;
            }
            if *will_retry {
                let failed_at = conditions::job_failed_at(&job).unwrap_or_else(Timestamp::now);
                let due = failed_at + migration_retry_delay(attempt);
                let now = Timestamp::now();
                if now >= due {
                    // The next reconcile (the deletion is an event of an owned Job) creates the
                    // next attempt under the same name.
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        preconditions: Some(Preconditions { uid: job.uid(), resource_version: None }),
                        ..Default::default()
                    };
                    match jobs.delete(&job_name, &params).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                        Err(error) => return Err(error.into()),
                    }
                    info!(job = %job_name, attempt, "removed a failed migration Job to retry it");
                    retry_in = Some(Duration::from_secs(1));
                } else {
                    let wait = now.duration_until(due).unsigned_abs();
                    retry_in = Some(wait.max(Duration::from_secs(1)));
                }
            }
        }
        Ok((state, retry_in))
    }

    /// Migration Jobs started for `spec.image` so far (0 when none or for another image).
    fn migration_attempts(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.migration.as_ref())
            .filter(|m| m.image == self.spec.image)
            .map_or(0, |m| m.attempts)
    }

    /// Deletes the migration Jobs of this Sequencer other than `keep` (and their pods).
    async fn delete_superseded_migration_jobs(&self, ctx: &Context, namespace: &str, keep: &str) -> Result<()> {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
        let selector = format!("{LABEL_INSTANCE}={},{LABEL_COMPONENT}={COMPONENT_MIGRATIONS}", self.name_any());
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        for job in jobs.list(&ListParams::default().labels(&selector)).await? {
            let name = job.name_any();
            // NB: only Jobs this Sequencer controls with all its labels: never someone else's.
            if name != keep && resources::is_own_child(job.meta(), self, COMPONENT_MIGRATIONS) {
                match jobs.delete(&name, &params).await {
                    Ok(_) => info!(job = %name, "deleted a superseded migration Job"),
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Reads the admin status; any failure becomes a sentence for the conditions.
    async fn read_admin_status(&self, ctx: &Context, namespace: &str) -> AdminState {
        let client = match ctx.admin_client(namespace, &self.name_any(), &self.spec.auth.admin_api_key_secret).await {
            Ok(client) => client,
            Err(why) => return AdminState::Unavailable(why),
        };
        match client.status(ADMIN_STATUS_TIMEOUT).await {
            Ok(status) => AdminState::Read(status),
            Err(error) => {
                debug!(%error, "admin status unavailable");
                AdminState::Unavailable(error.to_string())
            }
        }
    }

    /// The status for what was seen. Pure: the same observation gives the same status, so an
    /// unchanged world writes nothing.
    pub fn next_status(&self, seen: &SequencerObservation, now: &Time) -> SequencerStatus {
        let previous = self.status.clone().unwrap_or_default();
        let generation = self.meta().generation;
        let computed = conditions::sequencer_conditions(&self.spec, seen);
        let d = seen.deployment.clone().unwrap_or_default();
        let (version, admin) = match &seen.admin {
            AdminState::Read(status) => (
                status.version.clone().or(previous.version.clone()),
                Some(AdminStatusSummary {
                    schema_version: status.schema_version,
                    database_connected: status.database.as_ref().and_then(|d| d.connected),
                    dead_letters_pending: status.dead_letters.as_ref().and_then(|d| d.pending),
                    circuit_state: status.anchoring.as_ref().and_then(|a| a.circuit_state.clone()),
                    unanchored_commitments: status.anchoring.as_ref().and_then(|a| a.unanchored_commitments),
                    paused_streams: status.ingestion.as_ref().and_then(|i| i.paused_streams),
                }),
            ),
            // Keep what was last read: status says what the operator last saw.
            _ => (previous.version.clone(), previous.admin.clone()),
        };
        let migration = match &seen.migration {
            MigrationState::Running { attempt, .. } | MigrationState::Failed { attempt, .. } => {
                Some(MigrationStatus { image: self.spec.image.clone(), attempts: *attempt })
            }
            _ => previous.migration.clone().filter(|m| m.image == self.spec.image),
        };
        SequencerStatus {
            observed_generation: generation,
            conditions: conditions::settle(&previous.conditions, computed, generation, now),
            replicas: d.replicas,
            ready_replicas: d.ready_replicas,
            updated_replicas: d.updated_replicas,
            available_replicas: d.available_replicas,
            selector: Some(resources::selector_string(self)),
            current_image: d.image,
            version,
            admin,
            migration,
        }
    }

    /// Events for conditions that changed status: Ready becoming True, Degraded becoming True.
    async fn publish_transitions(&self, ctx: &Context, next: &SequencerStatus) {
        let became = |type_: ConditionType, status: Status| {
            let now = next.conditions.iter().find(|c| c.type_ == type_.as_str())?;
            let before = self.condition(type_.as_str()).map(|c| c.status.as_str());
            (now.status == status.as_str() && before != Some(status.as_str())).then(|| now.clone())
        };
        if let Some(ready) = became(ConditionType::Ready, Status::True) {
            ctx.publish(&self.object_ref(&()), EventType::Normal, Reason::AllReplicasReady, "Reconcile", ready.message)
                .await;
        }
        if let Some(degraded) = became(ConditionType::Degraded, Status::True)
            && degraded.reason != Reason::MigrationJobFailed.as_str()
            && degraded.reason != Reason::MigrationJobRetrying.as_str()
        {
            ctx.publish(
                &self.object_ref(&()),
                EventType::Warning,
                degraded_reason(&degraded.reason),
                "Reconcile",
                degraded.message,
            )
            .await;
        }
    }
}

fn degraded_reason(reason: &str) -> Reason {
    [Reason::RolloutStalled, Reason::ReplicasUnavailable, Reason::DatabaseUnreachable]
        .into_iter()
        .find(|r| r.as_str() == reason)
        .unwrap_or(Reason::ReplicasUnavailable)
}

/// What the operator needs of a Deployment as the API server returned it.
fn deployment_state(deployment: &Deployment) -> DeploymentState {
    let status = deployment.status.clone().unwrap_or_default();
    DeploymentState {
        image: resources::sequencer_container_image(deployment),
        generation_observed: status.observed_generation >= deployment.metadata.generation,
        progress_deadline_exceeded: status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        }),
        rollout_finished: status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.status == "True" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        }),
        replicas: status.replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Each reconcile path against the mocked API server; see [`Scenario`] for what each expects.

    use super::*;
    use crate::fixtures::*;

    async fn reconcile_in(seq: Sequencer, scenario: Scenario, admin_url: Option<String>) -> Result<Action> {
        let (ctx, api) = mocked_context(admin_url);
        let server = api.run(scenario);
        let result = reconcile(Arc::new(seq), ctx).await;
        server.await.expect("the scenario's assertions hold");
        result
    }

    #[tokio::test]
    pub(crate) async fn creating_a_sequencer_in_job_mode_runs_the_migration_job_before_any_deployment() {
        let seq = Sequencer::test();
        let action = reconcile_in(seq.clone(), Scenario::CreateStartsMigrationJob(seq), None).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    pub(crate) async fn creating_a_sequencer_that_migrates_on_startup_applies_the_deployment_at_once() {
        let seq = Sequencer::test().with_migrations(MigrationsMode::OnStartup);
        reconcile_in(seq.clone(), Scenario::CreateWithMigrationsOnStartup(seq), None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_succeeded_migration_job_moves_the_deployment_to_the_new_image() {
        let seq = Sequencer::test();
        reconcile_in(seq.clone(), Scenario::MigrationSucceededRollsOut(seq), None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_failed_migration_job_keeps_the_old_deployment_and_reports_the_jobs_reason() {
        let seq = Sequencer::test().with_migration_retries(0);
        reconcile_in(seq.clone(), Scenario::MigrationFailedKeepsOldDeployment(seq), None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_deployment_edited_by_someone_else_is_taken_back_without_a_status_write() {
        let seq = Sequencer::test().with_replicas(3);
        // The status this observation yields, as if written by the previous reconcile.
        let seen = SequencerObservation {
            deployment: Some(DeploymentState {
                image: Some(seq.spec.image.clone()),
                generation_observed: true,
                progress_deadline_exceeded: false,
                rollout_finished: false,
                replicas: 1,
                ready_replicas: 0,
                updated_replicas: 1,
                available_replicas: 0,
            }),
            migration: MigrationState::UpToDate,
            admin: AdminState::NotRead,
            monitoring: Default::default(),
        };
        let status = seq.next_status(&seen, &Time(Timestamp::now()));
        let seq = seq.with_status(status);
        reconcile_in(seq.clone(), Scenario::DriftIsRepaired(seq), None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_spec_change_rolls_the_deployment_through_the_config_hash() {
        let before = Sequencer::test();
        let previous_hash = resources::config_hash(&resources::config_map(&before));
        let seq = before.with_rate_limit(600).with_generation(2);
        reconcile_in(seq.clone(), Scenario::SpecChangeRollsDeployment { seq, previous_hash }, None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_ready_sequencer_reports_what_its_admin_status_says() {
        let stub = AdminStub::default();
        let url = stub.start(vec![("/api/v1/admin/status", 200, admin_status_with_trouble())]).await;
        let seq = Sequencer::test().with_replicas(2).anchoring();
        reconcile_in(seq.clone(), Scenario::ReadyReadsAdminStatus(seq), Some(url)).await.unwrap();
        let requests = stub.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1, format!("ApiKey {ADMIN_KEY}"));
    }

    #[tokio::test]
    pub(crate) async fn a_failed_migration_job_with_attempts_left_is_replaced_after_its_backoff() {
        let seq = Sequencer::test();
        let action =
            reconcile_in(seq.clone(), Scenario::FailedMigrationIsRetriedAfterBackoff(seq), None).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    }

    #[test]
    fn migration_retries_back_off_from_thirty_seconds_to_ten_minutes() {
        let delays: Vec<u64> = (1..=7).map(|attempt| migration_retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 480, 600, 600]);
    }

    #[tokio::test]
    pub(crate) async fn a_service_of_someone_else_under_the_sequencers_name_is_never_written() {
        let seq = Sequencer::test().with_migrations(MigrationsMode::OnStartup);
        let error =
            reconcile_in(seq.clone(), Scenario::ServiceNameConflictWritesNothingToIt(seq), None).await.unwrap_err();
        assert_eq!(error.metric_label(), "name_conflict");
    }

    #[tokio::test]
    pub(crate) async fn scaling_to_one_replica_deletes_our_pod_disruption_budget() {
        let seq = Sequencer::test().with_replicas(1);
        reconcile_in(seq.clone(), Scenario::PodDisruptionBudgetOnScaleDown { seq, ours: true }, None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_pod_disruption_budget_of_someone_else_is_never_deleted() {
        let seq = Sequencer::test().with_replicas(1);
        reconcile_in(seq.clone(), Scenario::PodDisruptionBudgetOnScaleDown { seq, ours: false }, None).await.unwrap();
    }

    #[tokio::test]
    pub(crate) async fn a_failed_reconcile_reaches_status_as_reconciling_with_the_error() {
        let seq = Sequencer::test();
        reconcile_in(seq.clone(), Scenario::ReconcileErrorReachesStatus(seq), None).await.unwrap_err();
    }

    #[tokio::test]
    pub(crate) async fn a_pod_monitor_is_applied_and_its_absent_crds_are_reported_instead_of_failing() {
        for crds_installed in [true, false] {
            let mut seq = Sequencer::test().with_migrations(MigrationsMode::OnStartup);
            seq.spec.monitoring.pod_monitor.enabled = true;
            reconcile_in(seq.clone(), Scenario::PodMonitor { seq, crds_installed }, None).await.unwrap();
        }
    }

    #[test]
    fn the_admin_status_is_read_at_most_every_status_poll_seconds() {
        let poll = Duration::from_secs(30);
        let start = Instant::now();
        assert!(admin_read_due(None, start, poll));
        assert!(!admin_read_due(Some(start), start + Duration::from_secs(10), poll));
        assert!(admin_read_due(Some(start), start + poll, poll), "the requeue after statusPollSeconds reads");
    }

    #[test]
    fn a_busy_minute_of_status_writes_and_child_events_costs_two_reconciles_and_two_admin_reads() {
        use futures::StreamExt;
        use kube::runtime::WatchStreamExt;
        // A minute in which the operator writes the Sequencer's status every second (a dead-letter
        // flood moving status.admin) and the spec changes once, at 30 s.
        let mut events = Vec::new();
        let mut seq = Sequencer::test();
        seq.metadata.resource_version = Some("1".into());
        events.push(Ok(seq.clone()));
        for second in 1..60u64 {
            seq.metadata.resource_version = Some((second + 1).to_string());
            let mut status = seq.status.clone().unwrap_or_default();
            status.admin = Some(AdminStatusSummary { dead_letters_pending: Some(second * 100), ..Default::default() });
            seq.status = Some(status);
            if second == 30 {
                seq.spec.rate_limits.per_tenant_per_minute = Some(600);
                seq.metadata.generation = Some(2);
            }
            events.push(Ok(seq.clone()));
        }
        let triggered = futures::executor::block_on(
            futures::stream::iter(events)
                .predicate_filter(super::super::sequencer_trigger(), Default::default())
                .count(),
        );
        assert_eq!(triggered, 2, "the first sight and the spec change; status writes trigger nothing");

        // Meanwhile child events (a rollout's pods) trigger a reconcile every 2 s, plus the
        // requeue every statusPollSeconds: the admin API is asked twice in the minute.
        let poll = Duration::from_secs(30);
        let start = Instant::now();
        let mut last = None;
        let mut reads = 0;
        for second in (0..60).step_by(2) {
            let now = start + Duration::from_secs(second);
            if admin_read_due(last, now, poll) {
                reads += 1;
                last = Some(now);
            }
        }
        assert_eq!(reads, 2);
    }

    #[test]
    fn a_failed_reconcile_keeps_the_other_conditions_and_stalls_only_on_what_needs_a_human() {
        let seq = Sequencer::test();
        let seen = SequencerObservation {
            deployment: Some(DeploymentState {
                image: Some(seq.spec.image.clone()),
                generation_observed: true,
                progress_deadline_exceeded: false,
                rollout_finished: true,
                replicas: 1,
                ready_replicas: 1,
                updated_replicas: 1,
                available_replicas: 1,
            }),
            migration: MigrationState::UpToDate,
            admin: AdminState::NotRead,
            monitoring: Default::default(),
        };
        let now = Time(Timestamp::now());
        let seq = seq.clone().with_status(seq.next_status(&seen, &now));
        let conflict = Error::NameConflict {
            kind: "Service".into(),
            namespace: NAMESPACE.into(),
            name: NAME.into(),
            controller: "it has no controller owner reference".into(),
        };
        let failed = seq.failed_status(&conflict, &now);
        let find = |t: &str| failed.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!((find("Ready").status.as_str(), find("Ready").reason.as_str()), ("False", "NameConflict"));
        assert_eq!(find("Stalled").status, "True");
        assert_eq!(find("MigrationsApplied").reason, "UpToDate", "kept from the last successful reconcile");
        assert_eq!(failed.conditions.len(), seq.status.as_ref().unwrap().conditions.len());
        let forbidden = Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("deployments.apps is forbidden: User cannot patch", "Forbidden").with_code(403),
        )));
        let failed = seq.failed_status(&forbidden, &now);
        let ready = failed.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason, "Forbidden");
    }

    #[tokio::test]
    async fn a_sequencer_being_deleted_is_left_to_the_garbage_collector() {
        let seq = Sequencer::test().deleting();
        let action = reconcile_in(seq, Scenario::DeletionTouchesNothing, None).await.unwrap();
        assert_eq!(action, Action::await_change());
    }
}
