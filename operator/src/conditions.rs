//! Conditions: typed types and reasons, and their pure computation from what the operator saw.
//!
//! Nothing here does I/O. A condition's `lastTransitionTime` is kept unless its status changes,
//! so computing the same conditions twice yields the same status and no write.

use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::admin::AdminStatus;
use crate::crd::{MigrationsMode, SequencerSpec};

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Declares a `Copy` enum whose variants spell themselves, with `as_str` and `Display`.
macro_rules! spelled_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// The spelling in the API (the variant's name).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum! {
    /// Condition types of a `Sequencer` and a `SequencerAction`.
    ConditionType {
        /// Sequencer: the desired spec is rolled out and every replica serves.
        Ready,
        /// kstatus: the controller is still working towards the spec (True while Ready is False
        /// for a reason that resolves by itself; for a SequencerAction, Pending or Running).
        /// Abnormal-true, so absent means False.
        Reconciling,
        /// kstatus: the controller cannot reach the spec without a human (name conflict, migration
        /// Job failed after its retries, a spec the API server rejects, a stalled rollout; for a
        /// SequencerAction, Failed).
        Stalled,
        /// Sequencer: a migration or rollout is under way.
        Progressing,
        /// Sequencer: something needs a human (failed migration, stalled rollout, lost replicas).
        Degraded,
        /// Sequencer: the database schema matches the image to run.
        MigrationsApplied,
        /// Sequencer: anchoring works (or is off on purpose).
        AnchoringHealthy,
        /// Sequencer: dead letters wait for a fix and a replay.
        DeadLettersPending,
        /// Sequencer: the PodMonitor asked for in spec.monitoring.podMonitor exists (or none is asked for).
        MonitoringReady,
        /// SequencerAction: the action did what it was asked (Unknown until it finishes).
        Succeeded,
        /// SequencerAction: the action finished, either way.
        Complete,
    }
}

spelled_enum! {
    /// Every reason the operator writes into a condition or an event.
    Reason {
        // Sequencer: rollout.
        /// The Deployment does not exist yet.
        Creating,
        /// Pods of the current template are being started.
        RollingOut,
        /// Every replica runs the current template.
        RolloutComplete,
        /// The Deployment exceeded its progress deadline.
        RolloutStalled,
        /// Fewer replicas are available than asked for.
        ReplicasUnavailable,
        /// Every replica is available on the desired image.
        AllReplicasReady,
        /// replicas is 0 and no pod runs.
        ScaledToZero,
        /// Nothing is wrong.
        AsExpected,
        /// The sequencer reports that it cannot reach its database.
        DatabaseUnreachable,
        /// An object the Sequencer would own exists and is controlled by someone else.
        NameConflict,
        /// The API server refused an object built from the spec (400/422).
        SpecRejected,
        /// The operator's RBAC does not allow a request it needs (403).
        Forbidden,
        // Sequencer: migrations.
        /// A migration Job is running.
        MigrationJobRunning,
        /// The migration Job of the desired image succeeded.
        MigrationJobSucceeded,
        /// The migration Job failed; the old Deployment keeps running.
        MigrationJobFailed,
        /// A migration Job failed and is retried with backoff (spec.migrations.retries).
        MigrationJobRetrying,
        /// The Deployment already runs the desired image, whose migrations were applied.
        UpToDate,
        /// Pods migrate as they start and one of them is ready.
        AppliedOnStartup,
        /// Pods migrate as they start; none is ready yet.
        WaitingForStartup,
        /// migrations.mode is Disabled.
        MigrationsDisabled,
        // Sequencer: admin status.
        /// No ready pod could be asked yet.
        AdminStatusNotRead,
        /// The admin status could not be read.
        AdminStatusUnavailable,
        /// Anchoring is off in the spec.
        AnchoringDisabled,
        /// The spec enables anchoring but the sequencer reports it off.
        AnchoringNotConfigured,
        /// The anchoring circuit breaker is closed.
        CircuitClosed,
        /// The anchoring circuit breaker is open.
        CircuitOpen,
        /// The anchoring circuit breaker is probing the chain again.
        CircuitHalfOpen,
        /// The oldest unanchored commitment waits far longer than the anchoring interval.
        AnchoringLagging,
        /// The worker leader's anchoring report is old: no replica leads the worker.
        LeaderStatusStale,
        /// Dead letters are pending.
        DeadLettersPresent,
        /// No dead letter is pending.
        NoDeadLetters,
        /// spec.monitoring.podMonitor is off.
        PodMonitorDisabled,
        /// The PodMonitor is applied.
        PodMonitorApplied,
        /// The monitoring.coreos.com CRDs (Prometheus Operator) are not installed.
        MonitoringCrdsAbsent,
        // SequencerAction.
        /// The action has not called the admin API yet.
        Pending,
        /// The action waits for its Sequencer to have a ready replica.
        WaitingForSequencer,
        /// The admin API is being called.
        Running,
        /// The last call failed in a way that may pass; it is retried until the deadline.
        RetryingAfterError,
        /// The batch was anchored.
        Anchored,
        /// An earlier transaction had already anchored the batch.
        AlreadyAnchored,
        /// Every selected dead letter was sequenced.
        DeadLettersReplayed,
        /// Some selected dead letters were rejected again.
        DeadLettersRejected,
        /// The stream verified without findings.
        StreamConsistent,
        /// The stream has findings (gaps, duplicates, bad hashes or signatures, mismatches).
        StreamInconsistent,
        /// The stream's ingestion was paused.
        StreamPaused,
        /// The stream's ingestion was resumed.
        StreamResumed,
        /// A correcting commitment was created.
        CommitmentCorrected,
        /// The commitment had already been corrected.
        AlreadyCorrected,
        /// Dead letters were deleted.
        DeadLettersPurged,
        /// VACUUM ANALYZE ran.
        Vacuumed,
        /// Idle database connections were terminated.
        IdleConnectionsTerminated,
        /// The admin API refused the request (a 4xx other than 401/403/404).
        RequestRejected,
        /// The admin API refused the key.
        Unauthorized,
        /// The admin API does not know the object named in the spec.
        NotFound,
        /// The admin API answered 2xx with a body the operator cannot read.
        UnreadableResponse,
        /// The spec names no operation or several (only with an out-of-date CRD).
        InvalidSpec,
        /// The action did not finish before its deadline.
        DeadlineExceeded,
        // Events only.
        /// A migration Job was created.
        MigrationJobCreated,
        /// The Deployment was moved to a new image.
        ImageRolledOut,
        /// An action started calling the admin API.
        ActionStarted,
        /// An action reached Succeeded.
        ActionSucceeded,
        /// An action reached Failed.
        ActionFailed,
        /// A reconcile failed; it is retried.
        ReconcileFailed,
    }
}

/// A condition as computed, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub type_: ConditionType,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Computed {
    pub fn new(type_: ConditionType, status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// Turns computed conditions into API conditions. A condition keeps the `lastTransitionTime` of
/// its predecessor of the same type when the status did not change; otherwise it gets `now`.
pub fn settle(previous: &[Condition], computed: Vec<Computed>, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    computed
        .into_iter()
        .map(|c| {
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_.as_str() && p.status == c.status.as_str())
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.as_str().to_string(),
                status: c.status.as_str().to_string(),
                reason: c.reason.as_str().to_string(),
                message: c.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether `conditions` holds `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions.iter().any(|c| c.type_ == type_.as_str() && c.status == Status::True.as_str())
}

/// What the operator saw of the sequencer's Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentState {
    /// Image of the sequencer container.
    pub image: Option<String>,
    /// Whether the Deployment controller has seen the Deployment's latest generation.
    pub generation_observed: bool,
    /// Whether the Deployment reports ProgressDeadlineExceeded.
    pub progress_deadline_exceeded: bool,
    /// Whether the Deployment reports its latest ReplicaSet available (Progressing reason
    /// NewReplicaSetAvailable): the last rollout finished, so missing pods are lost, not starting.
    pub rollout_finished: bool,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
}

/// Where migrations stand for the desired image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationState {
    /// Job mode; the Deployment already runs the desired image, so no Job is needed.
    UpToDate,
    /// Job mode; the Job of attempt `attempt` (1-based) is running (or waiting to be scheduled).
    Running { job: String, attempt: i32 },
    /// Job mode; the Job of the desired image succeeded.
    Succeeded { job: String },
    /// Job mode; the Job of attempt `attempt` of `max_attempts` failed. `reason` and `message` are
    /// the Job's own. `will_retry`: a later attempt follows after a backoff (not stalled yet).
    Failed { job: String, reason: String, message: String, attempt: i32, max_attempts: i32, will_retry: bool },
    /// OnStartup mode.
    OnStartup,
    /// Disabled mode.
    Disabled,
}

impl MigrationState {
    /// Whether the desired image may be rolled out.
    pub fn allows_rollout(&self) -> bool {
        !matches!(self, MigrationState::Running { .. } | MigrationState::Failed { .. })
    }
}

/// When the Job's `Failed` condition became True, if it has one.
pub fn job_failed_at(job: &Job) -> Option<k8s_openapi::jiff::Timestamp> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let failed = conditions.iter().find(|c| c.type_ == "Failed" && c.status == Status::True.as_str())?;
    failed.last_transition_time.as_ref().map(|t| t.0)
}

/// Where the migration Job `name` of attempt `attempt` (of `max_attempts`) stands, from its
/// conditions. Only the terminal `Complete` and `Failed` conditions count; anything else is still
/// running.
pub fn migration_state_of(name: &str, job: &Job, attempt: i32, max_attempts: i32) -> MigrationState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let terminal =
        |type_: &str| conditions.into_iter().flatten().find(|c| c.type_ == type_ && c.status == Status::True.as_str());
    if terminal("Complete").is_some() {
        return MigrationState::Succeeded { job: name.to_string() };
    }
    if let Some(failed) = terminal("Failed") {
        return MigrationState::Failed {
            job: name.to_string(),
            reason: failed.reason.clone().unwrap_or_else(|| "Failed".to_string()),
            message: failed.message.clone().unwrap_or_default(),
            attempt,
            max_attempts,
            will_retry: attempt < max_attempts,
        };
    }
    MigrationState::Running { job: name.to_string(), attempt }
}

/// What the operator knows of the sequencer's admin status.
#[derive(Clone, Debug, PartialEq)]
pub enum AdminState {
    /// Not asked: no replica is ready.
    NotRead,
    /// Asked and failed.
    Unavailable(String),
    /// The answer.
    Read(AdminStatus),
}

/// Where the PodMonitor stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MonitoringState {
    /// Not asked for.
    #[default]
    Disabled,
    /// Applied.
    Applied,
    /// Asked for, but the monitoring.coreos.com CRDs are not installed.
    CrdsAbsent,
}

/// Everything the Sequencer's conditions are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencerObservation {
    pub deployment: Option<DeploymentState>,
    pub migration: MigrationState,
    pub admin: AdminState,
    pub monitoring: MonitoringState,
}

/// An anchoring backlog older than this many anchoring intervals is lagging…
const LAG_INTERVALS: u64 = 10;
/// …but never before this many seconds.
const LAG_FLOOR_SECONDS: u64 = 600;

/// The conditions of a Sequencer, in a fixed order: `Ready`, the kstatus pair `Reconciling` and
/// `Stalled` (derived from Ready), then the detail conditions.
pub fn sequencer_conditions(spec: &SequencerSpec, seen: &SequencerObservation) -> Vec<Computed> {
    let rollout = Rollout::of(spec, seen);
    let ready = ready(spec, seen, &rollout);
    let [reconciling, stalled] = kstatus_pair(&ready);
    vec![
        ready,
        reconciling,
        stalled,
        progressing(seen, &rollout),
        degraded(seen, &rollout),
        migrations_applied(spec, seen),
        anchoring_healthy(spec, &seen.admin),
        dead_letters_pending(&seen.admin),
        monitoring_ready(seen.monitoring),
    ]
}

fn monitoring_ready(state: MonitoringState) -> Computed {
    use ConditionType::MonitoringReady;
    match state {
        MonitoringState::Disabled => Computed::new(
            MonitoringReady,
            Status::True,
            Reason::PodMonitorDisabled,
            "spec.monitoring.podMonitor is off",
        ),
        MonitoringState::Applied => Computed::new(
            MonitoringReady,
            Status::True,
            Reason::PodMonitorApplied,
            "the PodMonitor of the sequencer pods is applied",
        ),
        MonitoringState::CrdsAbsent => Computed::new(
            MonitoringReady,
            Status::False,
            Reason::MonitoringCrdsAbsent,
            "spec.monitoring.podMonitor is enabled but the monitoring.coreos.com CRDs (Prometheus Operator) are not installed; the sequencer runs unmonitored",
        ),
    }
}

/// Whether a `Ready=False` with this reason needs a human: kstatus then reports Failed instead of
/// InProgress, and GitOps tools stop waiting.
pub fn reason_is_stalled(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::MigrationJobFailed
            | Reason::RolloutStalled
            | Reason::NameConflict
            | Reason::SpecRejected
            | Reason::Forbidden
    )
}

/// `Reconciling` and `Stalled` for a `Ready` condition: at most one of them is True, and only while
/// Ready is not True. They carry Ready's reason and message, so `kubectl wait`, kstatus (Flux,
/// kpt, cli-utils) and Argo CD all see the same story.
pub fn kstatus_pair(ready: &Computed) -> [Computed; 2] {
    use ConditionType::{Reconciling, Stalled};
    if ready.status == Status::True {
        return [
            Computed::new(Reconciling, Status::False, ready.reason, "the observed generation is rolled out"),
            Computed::new(Stalled, Status::False, ready.reason, "nothing is stuck"),
        ];
    }
    if reason_is_stalled(ready.reason) {
        [
            Computed::new(Reconciling, Status::False, ready.reason, "stopped: this needs a human"),
            Computed::new(Stalled, Status::True, ready.reason, ready.message.clone()),
        ]
    } else {
        [
            Computed::new(Reconciling, Status::True, ready.reason, ready.message.clone()),
            Computed::new(Stalled, Status::False, ready.reason, "nothing is stuck"),
        ]
    }
}

/// The `Ready`, `Reconciling` and `Stalled` conditions of a reconcile that failed with `reason`
/// and `message` (the other conditions keep what the last successful reconcile saw).
pub fn failed_reconcile(reason: Reason, message: String) -> Vec<Computed> {
    let ready = Computed::new(ConditionType::Ready, Status::False, reason, message);
    let [reconciling, stalled] = kstatus_pair(&ready);
    vec![ready, reconciling, stalled]
}

/// `computed` settled over `previous`, keeping previous conditions of the types `computed` lacks
/// (in their previous order, after the computed ones).
pub fn settle_over(
    previous: &[Condition],
    computed: Vec<Computed>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let types: Vec<&str> = computed.iter().map(|c| c.type_.as_str()).collect();
    let kept: Vec<Condition> = previous.iter().filter(|p| !types.contains(&p.type_.as_str())).cloned().collect();
    let mut out = settle(previous, computed, generation, now);
    out.extend(kept);
    out
}

/// How far the Deployment is from the spec.
struct Rollout {
    exists: bool,
    /// Every replica runs the desired image and template, and no old pod is left.
    updated: bool,
    /// At least `replicas` pods are ready and available.
    available: bool,
    /// The Deployment finished its last rollout (pods missing now were lost, not starting).
    finished: bool,
    stalled: bool,
    summary: String,
}

impl Rollout {
    fn of(spec: &SequencerSpec, seen: &SequencerObservation) -> Self {
        let Some(d) = &seen.deployment else {
            return Rollout {
                exists: false,
                updated: false,
                available: false,
                finished: false,
                stalled: false,
                summary: "the Deployment does not exist yet".into(),
            };
        };
        let want = spec.replicas;
        let on_image = d.image.as_deref() == Some(spec.image.as_str());
        Rollout {
            exists: true,
            updated: on_image
                && d.generation_observed
                && d.updated_replicas >= want
                && d.replicas == d.updated_replicas,
            available: d.available_replicas >= want && d.ready_replicas >= want,
            finished: d.rollout_finished,
            stalled: d.progress_deadline_exceeded,
            summary: format!(
                "{} of {want} replicas updated, {} ready, {} available (image {})",
                d.updated_replicas,
                d.ready_replicas,
                d.available_replicas,
                d.image.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

fn ready(spec: &SequencerSpec, seen: &SequencerObservation, r: &Rollout) -> Computed {
    use ConditionType::Ready;
    let (status, reason, message) = match &seen.migration {
        MigrationState::Failed { job, attempt, max_attempts, will_retry: true, .. } => (
            Status::False,
            Reason::MigrationJobRetrying,
            format!(
                "migration Job {job} failed (attempt {attempt} of {max_attempts}); it is retried after a backoff before {} rolls out",
                spec.image
            ),
        ),
        MigrationState::Failed { job, max_attempts, .. } => (
            Status::False,
            Reason::MigrationJobFailed,
            format!("migration Job {job} failed {max_attempts} time(s), so {} is not rolled out", spec.image),
        ),
        MigrationState::Running { job, .. } => (
            Status::False,
            Reason::MigrationJobRunning,
            format!("waiting for migration Job {job} before rolling out {}", spec.image),
        ),
        _ if !r.exists => (Status::False, Reason::Creating, r.summary.clone()),
        _ if r.stalled => (Status::False, Reason::RolloutStalled, r.summary.clone()),
        _ if !r.updated || (!r.available && !r.finished) => (Status::False, Reason::RollingOut, r.summary.clone()),
        _ if !r.available => (Status::False, Reason::ReplicasUnavailable, r.summary.clone()),
        _ if spec.replicas == 0 => (Status::True, Reason::ScaledToZero, "replicas is 0".to_string()),
        _ => (Status::True, Reason::AllReplicasReady, r.summary.clone()),
    };
    Computed::new(Ready, status, reason, message)
}

fn progressing(seen: &SequencerObservation, r: &Rollout) -> Computed {
    use ConditionType::Progressing;
    match &seen.migration {
        MigrationState::Running { job, .. } => Computed::new(
            Progressing,
            Status::True,
            Reason::MigrationJobRunning,
            format!("migration Job {job} is running"),
        ),
        MigrationState::Failed { job, will_retry: true, .. } => Computed::new(
            Progressing,
            Status::True,
            Reason::MigrationJobRetrying,
            format!("migration Job {job} failed and is retried after a backoff"),
        ),
        MigrationState::Failed { job, .. } => Computed::new(
            Progressing,
            Status::False,
            Reason::MigrationJobFailed,
            format!("migration Job {job} failed; nothing rolls out until it is fixed"),
        ),
        _ if !r.exists => Computed::new(Progressing, Status::True, Reason::Creating, r.summary.clone()),
        _ if r.stalled => Computed::new(Progressing, Status::False, Reason::RolloutStalled, r.summary.clone()),
        _ if !r.updated || (!r.available && !r.finished) => {
            Computed::new(Progressing, Status::True, Reason::RollingOut, r.summary.clone())
        }
        _ => Computed::new(Progressing, Status::False, Reason::RolloutComplete, r.summary.clone()),
    }
}

fn degraded(seen: &SequencerObservation, r: &Rollout) -> Computed {
    use ConditionType::Degraded;
    if let MigrationState::Failed { job, reason, message, will_retry, .. } = &seen.migration {
        return Computed::new(
            Degraded,
            Status::True,
            if *will_retry { Reason::MigrationJobRetrying } else { Reason::MigrationJobFailed },
            format!("migration Job {job} failed ({reason}: {message}); the previous Deployment keeps running"),
        );
    }
    if r.stalled {
        return Computed::new(Degraded, Status::True, Reason::RolloutStalled, r.summary.clone());
    }
    if r.exists && r.updated && r.finished && !r.available {
        return Computed::new(Degraded, Status::True, Reason::ReplicasUnavailable, r.summary.clone());
    }
    if let AdminState::Read(status) = &seen.admin
        && status.database.as_ref().and_then(|d| d.connected) == Some(false)
    {
        return Computed::new(
            Degraded,
            Status::True,
            Reason::DatabaseUnreachable,
            "the sequencer reports that its database is not connected",
        );
    }
    Computed::new(Degraded, Status::False, Reason::AsExpected, "nothing needs attention")
}

fn migrations_applied(spec: &SequencerSpec, seen: &SequencerObservation) -> Computed {
    use ConditionType::MigrationsApplied;
    let image = &spec.image;
    match &seen.migration {
        MigrationState::UpToDate => Computed::new(
            MigrationsApplied,
            Status::True,
            Reason::UpToDate,
            format!("the Deployment runs {image}, whose migrations were applied"),
        ),
        MigrationState::Succeeded { job } => Computed::new(
            MigrationsApplied,
            Status::True,
            Reason::MigrationJobSucceeded,
            format!("Job {job} applied the migrations of {image}"),
        ),
        MigrationState::Running { job, .. } => Computed::new(
            MigrationsApplied,
            Status::False,
            Reason::MigrationJobRunning,
            format!("Job {job} is applying the migrations of {image}"),
        ),
        MigrationState::Failed { job, reason, message, attempt, max_attempts, will_retry: true } => Computed::new(
            MigrationsApplied,
            Status::False,
            Reason::MigrationJobRetrying,
            format!(
                "Job {job} failed ({reason}: {message}), attempt {attempt} of {max_attempts}; it is retried after a backoff"
            ),
        ),
        MigrationState::Failed { job, reason, message, max_attempts, .. } => Computed::new(
            MigrationsApplied,
            Status::False,
            Reason::MigrationJobFailed,
            format!(
                "Job {job} failed ({reason}: {message}) on the last of {max_attempts} attempts. Read its logs, fix the cause, then delete the Job to run it again or change spec.image"
            ),
        ),
        MigrationState::OnStartup => {
            let serving = seen
                .deployment
                .as_ref()
                .is_some_and(|d| d.image.as_deref() == Some(image.as_str()) && d.ready_replicas > 0);
            if serving {
                Computed::new(
                    MigrationsApplied,
                    Status::True,
                    Reason::AppliedOnStartup,
                    format!("a pod of {image} migrated the database as it started and is ready"),
                )
            } else {
                Computed::new(
                    MigrationsApplied,
                    Status::Unknown,
                    Reason::WaitingForStartup,
                    format!("pods of {image} migrate as they start; none is ready yet"),
                )
            }
        }
        MigrationState::Disabled => Computed::new(
            MigrationsApplied,
            Status::Unknown,
            Reason::MigrationsDisabled,
            format!("migrations.mode is {:?}: the schema is managed outside the operator", MigrationsMode::Disabled),
        ),
    }
}

fn anchoring_healthy(spec: &SequencerSpec, admin: &AdminState) -> Computed {
    use ConditionType::AnchoringHealthy;
    if !spec.anchoring.enabled {
        return Computed::new(
            AnchoringHealthy,
            Status::True,
            Reason::AnchoringDisabled,
            "anchoring is not enabled in spec.anchoring",
        );
    }
    let status = match admin {
        AdminState::NotRead => {
            return Computed::new(
                AnchoringHealthy,
                Status::Unknown,
                Reason::AdminStatusNotRead,
                "no replica is ready to report its anchoring state",
            );
        }
        AdminState::Unavailable(why) => {
            return Computed::new(AnchoringHealthy, Status::Unknown, Reason::AdminStatusUnavailable, why.clone());
        }
        AdminState::Read(status) => status,
    };
    let Some(anchoring) = &status.anchoring else {
        return Computed::new(
            AnchoringHealthy,
            Status::Unknown,
            Reason::AdminStatusUnavailable,
            "the admin status has no anchoring section",
        );
    };
    if anchoring.stale == Some(true) {
        return Computed::new(
            AnchoringHealthy,
            Status::Unknown,
            Reason::LeaderStatusStale,
            format!(
                "the worker leader's last anchoring report is old (last breaker state {}): no replica leads the anchoring worker; commitments wait (status.admin.unanchoredCommitments)",
                anchoring.circuit_state.as_deref().unwrap_or("unknown")
            ),
        );
    }
    if anchoring.enabled == Some(false) {
        return Computed::new(
            AnchoringHealthy,
            Status::False,
            Reason::AnchoringNotConfigured,
            "spec.anchoring is enabled but the sequencer reports anchoring off; check its L2 settings and logs",
        );
    }
    match anchoring.circuit_state.as_deref() {
        Some("open") => {
            return Computed::new(
                AnchoringHealthy,
                Status::False,
                Reason::CircuitOpen,
                "the anchoring circuit breaker is open; commitments wait to be anchored (status.admin.unanchoredCommitments) and stay valid locally",
            );
        }
        Some("half_open") => {
            return Computed::new(
                AnchoringHealthy,
                Status::False,
                Reason::CircuitHalfOpen,
                "the anchoring circuit breaker is probing the chain again; commitments wait (status.admin.unanchoredCommitments)",
            );
        }
        _ => {}
    }
    let lag_limit = (u64::from(spec.anchoring.interval_seconds) * LAG_INTERVALS).max(LAG_FLOOR_SECONDS);
    if anchoring.oldest_unanchored_age_seconds.is_some_and(|age| age > lag_limit) {
        return Computed::new(
            AnchoringHealthy,
            Status::False,
            Reason::AnchoringLagging,
            format!("the oldest unanchored commitment waits longer than {lag_limit}s"),
        );
    }
    Computed::new(
        AnchoringHealthy,
        Status::True,
        Reason::CircuitClosed,
        "the anchoring circuit breaker is closed; commitments are anchored every round",
    )
}

fn dead_letters_pending(admin: &AdminState) -> Computed {
    use ConditionType::DeadLettersPending;
    let status = match admin {
        AdminState::NotRead => {
            return Computed::new(
                DeadLettersPending,
                Status::Unknown,
                Reason::AdminStatusNotRead,
                "no replica is ready to report its dead letters",
            );
        }
        AdminState::Unavailable(why) => {
            return Computed::new(DeadLettersPending, Status::Unknown, Reason::AdminStatusUnavailable, why.clone());
        }
        AdminState::Read(status) => status,
    };
    let Some(dead) = &status.dead_letters else {
        return Computed::new(
            DeadLettersPending,
            Status::Unknown,
            Reason::AdminStatusUnavailable,
            "the admin status has no deadLetters section",
        );
    };
    match dead.pending.unwrap_or(0) {
        0 => Computed::new(DeadLettersPending, Status::False, Reason::NoDeadLetters, "no dead letter is pending"),
        _ => {
            // NB: no counts here: a dead-letter flood would change the message, and so the status,
            // on every poll. The count is in status.admin.deadLettersPending.
            let reasons = dead.by_reason.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            let detail = if reasons.is_empty() { String::new() } else { format!(" (reasons: {reasons})") };
            Computed::new(
                DeadLettersPending,
                Status::True,
                Reason::DeadLettersPresent,
                format!(
                    "dead letters are pending{detail}; fix the cause, then replay them with a SequencerAction deadLetterReplay"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{AnchoringStatus, DatabaseStatus, DeadLetterStatus};
    use crate::crd::Sequencer;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn find(conditions: &[Computed], type_: ConditionType) -> &Computed {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn rolled_out(spec: &SequencerSpec) -> DeploymentState {
        DeploymentState {
            image: Some(spec.image.clone()),
            generation_observed: true,
            progress_deadline_exceeded: false,
            rollout_finished: true,
            replicas: spec.replicas,
            ready_replicas: spec.replicas,
            updated_replicas: spec.replicas,
            available_replicas: spec.replicas,
        }
    }

    fn healthy(spec: &SequencerSpec) -> SequencerObservation {
        SequencerObservation {
            deployment: Some(rolled_out(spec)),
            migration: MigrationState::UpToDate,
            admin: AdminState::Read(AdminStatus {
                version: Some("0.1.0".into()),
                database: Some(DatabaseStatus { connected: Some(true) }),
                dead_letters: Some(DeadLetterStatus::default()),
                anchoring: Some(AnchoringStatus {
                    enabled: Some(true),
                    circuit_state: Some("closed".into()),
                    unanchored_commitments: Some(1),
                    oldest_unanchored_age_seconds: Some(30),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            monitoring: MonitoringState::Disabled,
        }
    }

    #[test]
    fn a_pod_monitor_without_the_prometheus_operator_crds_is_reported_not_failed() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        seen.monitoring = MonitoringState::CrdsAbsent;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::MonitoringReady).reason, Reason::MonitoringCrdsAbsent);
        assert_eq!(find(&c, ConditionType::Ready).status, Status::True, "monitoring never blocks Ready");
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_stays_the_same() {
        let first = settle(
            &[],
            vec![Computed::new(ConditionType::Ready, Status::False, Reason::RollingOut, "1 of 3")],
            Some(1),
            &at(100),
        );
        let second = settle(
            &first,
            vec![Computed::new(ConditionType::Ready, Status::False, Reason::RollingOut, "2 of 3")],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].message, "2 of 3");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn a_condition_gets_a_new_transition_time_when_its_status_changes() {
        let first = settle(
            &[],
            vec![Computed::new(ConditionType::Ready, Status::False, Reason::RollingOut, "")],
            Some(1),
            &at(100),
        );
        let second = settle(
            &first,
            vec![Computed::new(ConditionType::Ready, Status::True, Reason::AllReplicasReady, "")],
            Some(1),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(200));
        assert_eq!(second[0].reason, "AllReplicasReady");
    }

    #[test]
    fn settling_the_same_conditions_twice_changes_nothing() {
        let spec = Sequencer::test().spec;
        let seen = healthy(&spec);
        let once = settle(&[], sequencer_conditions(&spec, &seen), Some(3), &at(100));
        let twice = settle(&once, sequencer_conditions(&spec, &seen), Some(3), &at(500));
        assert_eq!(once, twice);
    }

    #[test]
    fn every_sequencer_condition_type_is_always_reported_once() {
        let spec = Sequencer::test().spec;
        let types: Vec<_> = sequencer_conditions(&spec, &healthy(&spec)).iter().map(|c| c.type_).collect();
        assert_eq!(
            types,
            vec![
                ConditionType::Ready,
                ConditionType::Reconciling,
                ConditionType::Stalled,
                ConditionType::Progressing,
                ConditionType::Degraded,
                ConditionType::MigrationsApplied,
                ConditionType::AnchoringHealthy,
                ConditionType::DeadLettersPending,
                ConditionType::MonitoringReady
            ]
        );
    }

    #[test]
    fn a_fully_rolled_out_sequencer_is_ready_not_progressing_and_not_degraded() {
        let spec = Sequencer::test().with_replicas(3).spec;
        let c = sequencer_conditions(&spec, &healthy(&spec));
        assert_eq!(find(&c, ConditionType::Ready).status, Status::True);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::AllReplicasReady);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::False);
        assert_eq!(find(&c, ConditionType::Degraded).status, Status::False);
        assert_eq!(find(&c, ConditionType::MigrationsApplied).status, Status::True);
    }

    #[test]
    fn a_sequencer_without_a_deployment_is_creating() {
        let spec = Sequencer::test().spec;
        let seen = SequencerObservation {
            deployment: None,
            migration: MigrationState::Succeeded { job: "j".into() },
            admin: AdminState::NotRead,
            monitoring: Default::default(),
        };
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::Creating);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::True);
        assert_eq!(find(&c, ConditionType::DeadLettersPending).status, Status::Unknown);
    }

    #[test]
    fn old_pods_still_running_mean_the_rollout_is_in_progress() {
        let spec = Sequencer::test().with_replicas(3).spec;
        let mut seen = healthy(&spec);
        seen.deployment.as_mut().unwrap().replicas = 4;
        seen.deployment.as_mut().unwrap().updated_replicas = 2;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::RollingOut);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::True);
        assert_eq!(find(&c, ConditionType::Degraded).status, Status::False);
    }

    #[test]
    fn pods_of_a_new_rollout_that_are_still_starting_are_progress_not_degradation() {
        let spec = Sequencer::test().with_replicas(2).spec;
        let mut seen = healthy(&spec);
        let d = seen.deployment.as_mut().unwrap();
        d.rollout_finished = false;
        d.ready_replicas = 0;
        d.available_replicas = 0;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::RollingOut);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::True);
        assert_eq!(find(&c, ConditionType::Degraded).status, Status::False);
    }

    #[test]
    fn a_deployment_on_another_image_is_not_ready() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        seen.deployment.as_mut().unwrap().image = Some("old:1".into());
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Ready).status, Status::False);
    }

    #[test]
    fn a_failed_migration_job_degrades_the_sequencer_and_says_why() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        seen.deployment.as_mut().unwrap().image = Some("old:1".into());
        seen.migration = MigrationState::Failed {
            job: "seq-migrate-abc".into(),
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
            attempt: 4,
            max_attempts: 4,
            will_retry: false,
        };
        let c = sequencer_conditions(&spec, &seen);
        let migrations = find(&c, ConditionType::MigrationsApplied);
        assert_eq!(migrations.status, Status::False);
        assert_eq!(migrations.reason, Reason::MigrationJobFailed);
        assert!(migrations.message.contains("BackoffLimitExceeded"));
        assert_eq!(find(&c, ConditionType::Degraded).status, Status::True);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::MigrationJobFailed);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::False);
    }

    #[test]
    fn a_running_migration_job_is_progress_not_degradation() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        seen.migration = MigrationState::Running { job: "j".into(), attempt: 1 };
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Progressing).reason, Reason::MigrationJobRunning);
        assert_eq!(find(&c, ConditionType::Degraded).status, Status::False);
        assert_eq!(find(&c, ConditionType::MigrationsApplied).status, Status::False);
    }

    #[test]
    fn a_stalled_rollout_is_degraded_and_no_longer_progressing() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        let d = seen.deployment.as_mut().unwrap();
        d.progress_deadline_exceeded = true;
        d.updated_replicas = 0;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Degraded).reason, Reason::RolloutStalled);
        assert_eq!(find(&c, ConditionType::Progressing).status, Status::False);
    }

    #[test]
    fn lost_replicas_after_a_complete_rollout_degrade_the_sequencer() {
        let spec = Sequencer::test().with_replicas(3).spec;
        let mut seen = healthy(&spec);
        seen.deployment.as_mut().unwrap().available_replicas = 2;
        seen.deployment.as_mut().unwrap().ready_replicas = 2;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::Degraded).reason, Reason::ReplicasUnavailable);
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::ReplicasUnavailable);
    }

    #[test]
    fn a_sequencer_scaled_to_zero_is_ready() {
        let spec = Sequencer::test().with_replicas(0).spec;
        let c = sequencer_conditions(&spec, &healthy(&spec));
        assert_eq!(find(&c, ConditionType::Ready).reason, Reason::ScaledToZero);
    }

    #[test]
    fn migrations_on_startup_are_applied_once_a_pod_of_the_image_is_ready() {
        let spec = Sequencer::test().with_migrations(MigrationsMode::OnStartup).spec;
        let mut seen = healthy(&spec);
        seen.migration = MigrationState::OnStartup;
        assert_eq!(find(&sequencer_conditions(&spec, &seen), ConditionType::MigrationsApplied).status, Status::True);
        seen.deployment.as_mut().unwrap().ready_replicas = 0;
        assert_eq!(
            find(&sequencer_conditions(&spec, &seen), ConditionType::MigrationsApplied).reason,
            Reason::WaitingForStartup
        );
    }

    #[test]
    fn disabled_migrations_are_unknown_to_the_operator() {
        let spec = Sequencer::test().with_migrations(MigrationsMode::Disabled).spec;
        let mut seen = healthy(&spec);
        seen.migration = MigrationState::Disabled;
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::MigrationsApplied).status, Status::Unknown);
        assert_eq!(find(&c, ConditionType::Ready).status, Status::True);
    }

    #[test]
    fn anchoring_is_healthy_when_disabled_in_the_spec() {
        let spec = Sequencer::test().spec;
        let c = sequencer_conditions(&spec, &healthy(&spec));
        assert_eq!(find(&c, ConditionType::AnchoringHealthy).reason, Reason::AnchoringDisabled);
    }

    #[test]
    fn an_open_circuit_breaker_makes_anchoring_unhealthy() {
        let spec = Sequencer::test().anchoring().spec;
        let mut seen = healthy(&spec);
        if let AdminState::Read(s) = &mut seen.admin {
            s.anchoring.as_mut().unwrap().circuit_state = Some("open".into());
        }
        let c = find(&sequencer_conditions(&spec, &seen), ConditionType::AnchoringHealthy).clone();
        assert_eq!((c.status, c.reason), (Status::False, Reason::CircuitOpen));
        assert!(!c.message.chars().any(|ch| ch.is_ascii_digit()), "no counters in {:?}", c.message);
    }

    #[test]
    fn a_closed_circuit_is_healthy_unless_the_backlog_is_old() {
        let spec = Sequencer::test().anchoring().spec;
        let mut seen = healthy(&spec);
        assert_eq!(
            find(&sequencer_conditions(&spec, &seen), ConditionType::AnchoringHealthy).reason,
            Reason::CircuitClosed
        );
        if let AdminState::Read(s) = &mut seen.admin {
            s.anchoring.as_mut().unwrap().oldest_unanchored_age_seconds = Some(3600);
        }
        assert_eq!(
            find(&sequencer_conditions(&spec, &seen), ConditionType::AnchoringHealthy).reason,
            Reason::AnchoringLagging
        );
    }

    #[test]
    fn anchoring_enabled_in_the_spec_but_off_in_the_sequencer_is_unhealthy() {
        let spec = Sequencer::test().anchoring().spec;
        let mut seen = healthy(&spec);
        if let AdminState::Read(s) = &mut seen.admin {
            s.anchoring.as_mut().unwrap().enabled = Some(false);
        }
        assert_eq!(
            find(&sequencer_conditions(&spec, &seen), ConditionType::AnchoringHealthy).reason,
            Reason::AnchoringNotConfigured
        );
    }

    #[test]
    fn pending_dead_letters_are_reported_with_their_reasons() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        if let AdminState::Read(s) = &mut seen.admin {
            s.dead_letters = Some(DeadLetterStatus {
                pending: Some(5),
                by_reason: [("invalid_signature".to_string(), 3), ("unknown_key".to_string(), 2)].into(),
            });
        }
        let c = find(&sequencer_conditions(&spec, &seen), ConditionType::DeadLettersPending).clone();
        assert_eq!(c.status, Status::True);
        assert!(
            c.message.starts_with("dead letters are pending (reasons: invalid_signature, unknown_key)"),
            "{}",
            c.message
        );
        assert!(!c.message.chars().any(|ch| ch.is_ascii_digit()), "a count would change the status on every poll");
    }

    #[test]
    fn an_unreadable_admin_status_makes_admin_conditions_unknown() {
        let spec = Sequencer::test().anchoring().spec;
        let mut seen = healthy(&spec);
        seen.admin = AdminState::Unavailable("connection refused".into());
        let c = sequencer_conditions(&spec, &seen);
        assert_eq!(find(&c, ConditionType::AnchoringHealthy).status, Status::Unknown);
        assert_eq!(find(&c, ConditionType::DeadLettersPending).status, Status::Unknown);
        assert_eq!(find(&c, ConditionType::Ready).status, Status::True);
    }

    #[test]
    fn a_sequencer_without_its_database_is_degraded() {
        let spec = Sequencer::test().spec;
        let mut seen = healthy(&spec);
        if let AdminState::Read(s) = &mut seen.admin {
            s.database = Some(DatabaseStatus { connected: Some(false) });
        }
        assert_eq!(
            find(&sequencer_conditions(&spec, &seen), ConditionType::Degraded).reason,
            Reason::DatabaseUnreachable
        );
    }
}
