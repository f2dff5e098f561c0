//! Reconcile of a `Sequencer`: migrations gate, children by server-side apply, admin status, status.
//!
//! Order of one reconcile (each step's requests are fixed, which the mocked API-server tests pin):
//! 1. read the Deployment, to learn which image runs now;
//! 2. in Job mode with a new image: read (or create) the image's migration Job;
//! 3. apply ServiceAccount, ConfigMap, Service, the PodDisruptionBudget (or delete it), and the
//!    Deployment on the image the migrations allow (the old one while a Job runs or after it failed);
//! 4. after a rollout past a migration: delete migration Jobs of older images;
//! 5. read the admin status when a replica is ready;
//! 6. write status when it changed, and publish events for transitions.
//!
//! There is no finalizer: children carry a controller owner reference and the garbage collector
//! removes them with the Sequencer. A Sequencer being deleted is left alone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::Context;
use crate::conditions::{
    self, AdminState, ConditionType, DeploymentState, MigrationState, Reason, SequencerObservation, Status,
};
use crate::crd::{AdminStatusSummary, MigrationsMode, Sequencer, SequencerStatus};
use crate::labels::{COMPONENT_MIGRATIONS, FIELD_MANAGER, LABEL_COMPONENT, LABEL_INSTANCE};
use crate::metrics::Controller;
use crate::resources::{self, Names};
use crate::{Error, Result};

/// How long the operator waits for the admin status.
const ADMIN_STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Requeue after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(30);

/// Entry point of the controller: measures, skips deleted objects, reports failures as events.
#[instrument(skip_all, fields(sequencer = %seq.name_any(), namespace = seq.namespace().unwrap_or_default()))]
pub async fn reconcile(seq: Arc<Sequencer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(Controller::sequencer);
    if seq.meta().deletion_timestamp.is_some() {
        debug!("being deleted; the garbage collector removes the children");
        return Ok(Action::await_change());
    }
    let result = seq.reconcile(&ctx).await;
    if let Err(error) = &result {
        ctx.publish(&seq.object_ref(&()), EventType::Warning, Reason::ReconcileFailed, "Reconcile", error.to_string())
            .await;
    }
    result
}

/// Requeues a failed reconcile after a pause and counts the failure.
pub fn error_policy(seq: Arc<Sequencer>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(sequencer = %seq.name_any(), %error, "reconcile failed");
    ctx.metrics.failure(Controller::sequencer, error);
    Action::requeue(ERROR_REQUEUE)
}

impl Sequencer {
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace().ok_or_else(|| Error::InvalidSpec {
            kind: "Sequencer",
            name: self.name_any(),
            reason: "has no namespace".into(),
        })?;
        let name = self.name_any();
        let regarding = self.object_ref(&());

        // 1. What runs now.
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let live_image = deployments.get_opt(&name).await?.as_ref().and_then(resources::sequencer_container_image);

        // 2. Migrations gate the image.
        let migration = self.migration_state(ctx, &namespace, live_image.as_deref()).await?;
        let deploy_image = if migration.allows_rollout() { Some(self.spec.image.clone()) } else { live_image.clone() };

        // 3. Children.
        let children = resources::children(self, deploy_image.as_deref(), false);
        ctx.apply(&children.service_account).await?;
        ctx.apply(&children.config_map).await?;
        ctx.apply(&children.service).await?;
        match &children.pod_disruption_budget {
            Some(pdb) => {
                ctx.apply(pdb).await?;
            }
            None => ctx.delete_if_present::<PodDisruptionBudget>(&namespace, &name).await?,
        }
        let deployment = match &children.deployment {
            Some(deployment) => Some(ctx.apply(deployment).await?),
            None => None,
        };

        // 4. A rollout past a migration: record it, and drop Jobs of older images.
        let rolled_to_new_image = deploy_image.is_some() && live_image.is_some() && deploy_image != live_image;
        if let MigrationState::Succeeded { job } = &migration {
            ctx.publish(
                &regarding,
                EventType::Normal,
                Reason::MigrationJobSucceeded,
                "Migrate",
                format!("Job {job} applied the migrations of {}", self.spec.image),
            )
            .await;
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

        // 5. Admin status, from a ready replica.
        let deployment_state = deployment.as_ref().map(deployment_state);
        let admin = match &deployment_state {
            Some(d) if d.ready_replicas > 0 => self.read_admin_status(ctx, &namespace).await,
            _ => AdminState::NotRead,
        };

        // 6. Status and transition events.
        let seen = SequencerObservation { deployment: deployment_state, migration, admin };
        let status = self.next_status(&seen, &Time(Timestamp::now()));
        if self.status.as_ref() != Some(&status) {
            self.publish_transitions(ctx, &status).await;
            let api: Api<Sequencer> = Api::namespaced(ctx.client.clone(), &namespace);
            let patch = json!({
                "apiVersion": Sequencer::api_version(&()),
                "kind": Sequencer::kind(&()),
                "status": status,
            });
            api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        }
        Ok(Action::requeue(Duration::from_secs(self.spec.monitoring.status_poll_seconds.into())))
    }

    /// Where migrations stand for `spec.image`; in Job mode, creates the image's Job when missing.
    async fn migration_state(
        &self,
        ctx: &Context,
        namespace: &str,
        live_image: Option<&str>,
    ) -> Result<MigrationState> {
        match self.spec.migrations.mode {
            MigrationsMode::OnStartup => return Ok(MigrationState::OnStartup),
            MigrationsMode::Disabled => return Ok(MigrationState::Disabled),
            MigrationsMode::Job => {}
        }
        if live_image == Some(self.spec.image.as_str()) {
            return Ok(MigrationState::UpToDate);
        }
        let job_name = Names(&self.name_any()).migration_job(&self.spec.image);
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
        // NB: read before apply: a Job's pod template is immutable, so re-applying a Job after a
        // change of, say, resources would be refused. A Job is created once per image.
        let state = match jobs.get_opt(&job_name).await? {
            Some(job) => conditions::migration_state_of(&job_name, &job),
            None => {
                ctx.apply(&resources::migration_job(self)).await?;
                info!(job = %job_name, image = %self.spec.image, "migration Job created");
                ctx.publish(
                    &self.object_ref(&()),
                    EventType::Normal,
                    Reason::MigrationJobCreated,
                    "Migrate",
                    format!("Job {job_name} migrates the database for {}", self.spec.image),
                )
                .await;
                MigrationState::Running { job: job_name }
            }
        };
        if let MigrationState::Failed { job, reason, message } = &state {
            let already_reported = self
                .condition(ConditionType::MigrationsApplied.as_str())
                .is_some_and(|c| c.reason == Reason::MigrationJobFailed.as_str());
            if !already_reported {
                warn!(job = %job, reason = %reason, "migration Job failed; keeping the running Deployment");
                ctx.publish(
                    &self.object_ref(&()),
                    EventType::Warning,
                    Reason::MigrationJobFailed,
                    "Migrate",
                    format!("Job {job} failed ({reason}: {message}); the Deployment keeps its current image"),
                )
                .await;
            }
        }
        Ok(state)
    }

    /// Deletes the migration Jobs of this Sequencer other than `keep` (and their pods).
    async fn delete_superseded_migration_jobs(&self, ctx: &Context, namespace: &str, keep: &str) -> Result<()> {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
        let selector = format!("{LABEL_INSTANCE}={},{LABEL_COMPONENT}={COMPONENT_MIGRATIONS}", self.name_any());
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        for job in jobs.list(&ListParams::default().labels(&selector)).await? {
            let name = job.name_any();
            if name != keep {
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
mod tests {
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
    async fn creating_a_sequencer_in_job_mode_runs_the_migration_job_before_any_deployment() {
        let seq = Sequencer::test();
        let action = reconcile_in(seq.clone(), Scenario::CreateStartsMigrationJob(seq), None).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn creating_a_sequencer_that_migrates_on_startup_applies_the_deployment_at_once() {
        let seq = Sequencer::test().with_migrations(MigrationsMode::OnStartup);
        reconcile_in(seq.clone(), Scenario::CreateWithMigrationsOnStartup(seq), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_succeeded_migration_job_moves_the_deployment_to_the_new_image() {
        let seq = Sequencer::test();
        reconcile_in(seq.clone(), Scenario::MigrationSucceededRollsOut(seq), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_migration_job_keeps_the_old_deployment_and_reports_the_jobs_reason() {
        let seq = Sequencer::test();
        reconcile_in(seq.clone(), Scenario::MigrationFailedKeepsOldDeployment(seq), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_deployment_edited_by_someone_else_is_taken_back_without_a_status_write() {
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
        };
        let status = seq.next_status(&seen, &Time(Timestamp::now()));
        let seq = seq.with_status(status);
        reconcile_in(seq.clone(), Scenario::DriftIsRepaired(seq), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_spec_change_rolls_the_deployment_through_the_config_hash() {
        let before = Sequencer::test();
        let previous_hash = resources::config_hash(&resources::config_map(&before));
        let seq = before.with_rate_limit(600).with_generation(2);
        reconcile_in(seq.clone(), Scenario::SpecChangeRollsDeployment { seq, previous_hash }, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_ready_sequencer_reports_what_its_admin_status_says() {
        let stub = AdminStub::default();
        let url = stub.start(vec![("/api/v1/admin/status", 200, admin_status_with_trouble())]).await;
        let seq = Sequencer::test().with_replicas(2).anchoring();
        reconcile_in(seq.clone(), Scenario::ReadyReadsAdminStatus(seq), Some(url)).await.unwrap();
        let requests = stub.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1, format!("ApiKey {ADMIN_KEY}"));
    }

    #[tokio::test]
    async fn a_sequencer_being_deleted_is_left_to_the_garbage_collector() {
        let seq = Sequencer::test().deleting();
        let action = reconcile_in(seq, Scenario::DeletionTouchesNothing, None).await.unwrap();
        assert_eq!(action, Action::await_change());
    }
}
