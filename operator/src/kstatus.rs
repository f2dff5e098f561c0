//! Contract test: what kstatus (and so Flux, kpt and cli-utils) makes of the operator's status,
//! and the Argo CD health scripts' fixtures (compiled for tests only).
//!
//! [`compute`] encodes the published kstatus rules for a custom resource, from
//! kubernetes-sigs/cli-utils `pkg/kstatus/status`: `Compute` in `status.go` runs
//! `checkGenericProperties` in `generic.go` and, for a kind without built-in rules, ends in Current:
//! 1. `metadata.deletionTimestamp` set → Terminating;
//! 2. `status.observedGeneration` present and not `metadata.generation` → InProgress
//!    (LatestGenerationNotObserved);
//! 3. the first condition, in list order, that is `Reconciling=True` → InProgress, or
//!    `Stalled=True` → Failed;
//! 4. otherwise → Current ("Resource is current"): `Ready` itself is not read.
//!
//! The scenarios check, one by one, that a user waiting with kstatus sees what they expect. The
//! same scenarios, as the operator writes them, are the fixtures of the Argo CD Lua health scripts
//! in `operator/health/` (`health_fixtures_are_what_the_operator_writes` keeps them current; run it
//! with `UPDATE_HEALTH_FIXTURES=1` after a change of the conditions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::conditions::{AdminState, DeploymentState, MigrationState, SequencerObservation};
use crate::crd::Sequencer;

/// kstatus' verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KStatus {
    InProgress,
    Failed,
    Current,
    Terminating,
}

/// kstatus `Compute` for a custom resource (see the module doc for the rules and their source).
pub fn compute(object: &Value) -> KStatus {
    if object["metadata"]["deletionTimestamp"].as_str().is_some_and(|t| !t.is_empty()) {
        return KStatus::Terminating;
    }
    if let (Some(generation), Some(observed)) =
        (object["metadata"]["generation"].as_i64(), object["status"]["observedGeneration"].as_i64())
        && generation != observed
    {
        return KStatus::InProgress;
    }
    for condition in object["status"]["conditions"].as_array().into_iter().flatten() {
        match (condition["type"].as_str(), condition["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return KStatus::InProgress,
            (Some("Stalled"), Some("True")) => return KStatus::Failed,
            _ => {}
        }
    }
    KStatus::Current
}

/// One fixture: a resource as stored, what kstatus computes, and what Argo CD's health is.
pub struct HealthCase {
    pub name: &'static str,
    pub object: Value,
    pub kstatus: KStatus,
    pub argocd: &'static str,
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

fn deployment(seq: &Sequencer, ready: i32) -> DeploymentState {
    DeploymentState {
        image: Some(seq.spec.image.clone()),
        generation_observed: true,
        progress_deadline_exceeded: false,
        rollout_finished: ready >= seq.spec.replicas,
        replicas: seq.spec.replicas,
        ready_replicas: ready,
        updated_replicas: seq.spec.replicas,
        available_replicas: ready,
    }
}

fn stored(seq: &Sequencer) -> Value {
    let mut value = serde_json::to_value(seq).unwrap();
    value["metadata"]["managedFields"] = Value::Null;
    value["metadata"].as_object_mut().unwrap().remove("managedFields");
    value
}

fn observed(seq: &Sequencer, seen: SequencerObservation) -> Value {
    let status = seq.next_status(&seen, &at(1_700_000_000));
    stored(&seq.clone().with_status(status))
}

/// The Sequencer in every state a user meets, as the operator writes it.
pub fn sequencer_cases() -> Vec<HealthCase> {
    let seq = Sequencer::test().with_replicas(2);
    let up_to_date = |deployment: Option<DeploymentState>| SequencerObservation {
        deployment,
        migration: MigrationState::UpToDate,
        admin: AdminState::NotRead,
        monitoring: Default::default(),
    };
    let job = "ledger-migrate-abc1234".to_string();
    let mut cases = vec![
        HealthCase {
            name: "ready",
            object: observed(&seq, up_to_date(Some(deployment(&seq, 2)))),
            kstatus: KStatus::Current,
            argocd: "Healthy",
        },
        HealthCase {
            name: "migration-job-running",
            object: observed(
                &seq,
                SequencerObservation {
                    deployment: None,
                    migration: MigrationState::Running { job: job.clone(), attempt: 1 },
                    admin: AdminState::NotRead,
                    monitoring: Default::default(),
                },
            ),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "rolling-out",
            object: observed(&seq, up_to_date(Some(deployment(&seq, 0)))),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "migration-retrying",
            object: observed(
                &seq,
                SequencerObservation {
                    deployment: None,
                    migration: MigrationState::Failed {
                        job: job.clone(),
                        reason: "BackoffLimitExceeded".into(),
                        message: "database not up".into(),
                        attempt: 1,
                        max_attempts: 4,
                        will_retry: true,
                    },
                    admin: AdminState::NotRead,
                    monitoring: Default::default(),
                },
            ),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "migration-failed",
            object: observed(
                &seq,
                SequencerObservation {
                    deployment: None,
                    migration: MigrationState::Failed {
                        job,
                        reason: "BackoffLimitExceeded".into(),
                        message: "relation exists".into(),
                        attempt: 4,
                        max_attempts: 4,
                        will_retry: false,
                    },
                    admin: AdminState::NotRead,
                    monitoring: Default::default(),
                },
            ),
            kstatus: KStatus::Failed,
            argocd: "Degraded",
        },
        HealthCase {
            name: "rollout-stalled",
            object: observed(&seq, {
                let mut d = deployment(&seq, 1);
                d.progress_deadline_exceeded = true;
                up_to_date(Some(d))
            }),
            kstatus: KStatus::Failed,
            argocd: "Degraded",
        },
        HealthCase {
            name: "replicas-lost",
            object: observed(&seq, {
                let mut d = deployment(&seq, 1);
                d.rollout_finished = true;
                up_to_date(Some(d))
            }),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "scaled-to-zero",
            object: {
                let zero = seq.clone().with_replicas(0);
                observed(&zero, up_to_date(Some(deployment(&zero, 0))))
            },
            kstatus: KStatus::Current,
            argocd: "Suspended",
        },
    ];
    let ready_seq: Sequencer = serde_json::from_value(cases[0].object.clone()).unwrap();
    let conflict = crate::Error::NameConflict {
        kind: "Service".into(),
        namespace: "payments".into(),
        name: "ledger".into(),
        controller: "it has no controller owner reference".into(),
    };
    cases.push(HealthCase {
        name: "name-conflict",
        object: stored(&ready_seq.clone().with_status(ready_seq.failed_status(&conflict, &at(1_700_000_100)))),
        kstatus: KStatus::Failed,
        argocd: "Degraded",
    });
    let transient = crate::Error::Kube(kube::Error::Api(Box::new(
        kube::core::Status::failure("etcdserver: request timed out", "InternalError").with_code(500),
    )));
    cases.push(HealthCase {
        name: "transient-error",
        object: stored(&ready_seq.clone().with_status(ready_seq.failed_status(&transient, &at(1_700_000_100)))),
        kstatus: KStatus::InProgress,
        argocd: "Progressing",
    });
    let mut new_spec = cases[0].object.clone();
    new_spec["metadata"]["generation"] = json!(2);
    cases.push(HealthCase {
        name: "spec-not-yet-observed",
        object: new_spec,
        kstatus: KStatus::InProgress,
        argocd: "Progressing",
    });
    cases.push(HealthCase {
        name: "never-reconciled",
        object: stored(&seq),
        // NB: kstatus cannot tell a resource no controller has seen yet; Argo CD's script can.
        kstatus: KStatus::Current,
        argocd: "Progressing",
    });
    cases
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} is {status}: {reason}"),
           "observedGeneration": 1, "lastTransitionTime": "2023-11-14T22:13:20Z"})
}

fn action(phase: &str, conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "sequencer.stateset.io/v1alpha1", "kind": "SequencerAction",
        "metadata": {"name": "retry-anchor", "namespace": "payments", "generation": 1},
        "spec": {"sequencerRef": {"name": "ledger"}, "anchorRetry": {"batchId": "0b5f8a32-7c1e-4d52-9a61-3f0e8c2b7d41"}},
        "status": {"phase": phase, "observedGeneration": 1, "conditions": conditions}
    })
}

/// The SequencerAction in each phase, as the contract between the two controllers states it:
/// Pending or Running → Reconciling=True (reason = phase), Ready=False; Succeeded → Ready=True,
/// Reconciling=False, Stalled=False, Complete=True; Failed → Ready=False, Stalled=True (reason =
/// the failure), Reconciling=False, Complete=True.
pub fn action_cases() -> Vec<HealthCase> {
    vec![
        HealthCase {
            name: "pending",
            object: action(
                "Pending",
                vec![condition("Ready", "False", "Pending"), condition("Reconciling", "True", "Pending")],
            ),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "running",
            object: action(
                "Running",
                vec![condition("Ready", "False", "Running"), condition("Reconciling", "True", "Running")],
            ),
            kstatus: KStatus::InProgress,
            argocd: "Progressing",
        },
        HealthCase {
            name: "succeeded",
            object: action(
                "Succeeded",
                vec![
                    condition("Ready", "True", "Anchored"),
                    condition("Reconciling", "False", "Anchored"),
                    condition("Stalled", "False", "Anchored"),
                    condition("Complete", "True", "Anchored"),
                ],
            ),
            kstatus: KStatus::Current,
            argocd: "Healthy",
        },
        HealthCase {
            name: "failed",
            object: action(
                "Failed",
                vec![
                    condition("Ready", "False", "DeadlineExceeded"),
                    condition("Reconciling", "False", "DeadlineExceeded"),
                    condition("Stalled", "True", "DeadlineExceeded"),
                    condition("Complete", "True", "DeadlineExceeded"),
                ],
            ),
            kstatus: KStatus::Failed,
            argocd: "Degraded",
        },
        HealthCase {
            name: "never-reconciled",
            object: {
                let mut a = action("Pending", vec![]);
                a.as_object_mut().unwrap().remove("status");
                a
            },
            kstatus: KStatus::Current,
            argocd: "Progressing",
        },
    ]
}

/// `value` as a Lua table constructor (for the Lua test runner, which has no JSON parser).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The fixtures file of the Lua health scripts' test (`operator/health/fixtures.lua`).
pub fn lua_fixtures() -> String {
    let mut out = String::from(
        "-- Generated by the operator's kstatus contract test (operator/src/kstatus.rs) from the status the\n-- operator writes; regenerate with UPDATE_HEALTH_FIXTURES=1 cargo test -p sequencer-operator kstatus.\nreturn {\n",
    );
    for (kind, cases) in [("Sequencer", sequencer_cases()), ("SequencerAction", action_cases())] {
        for case in cases {
            out.push_str(&format!(
                "  {{kind = {kind:?}, name = {:?}, expect = {:?}, obj = {}}},\n",
                case.name,
                case.argocd,
                lua(&case.object)
            ));
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstatus_sees_each_sequencer_state_as_a_user_expects() {
        for case in sequencer_cases() {
            assert_eq!(compute(&case.object), case.kstatus, "Sequencer {}: {:#}", case.name, case.object["status"]);
        }
    }

    #[test]
    fn kstatus_sees_each_sequencer_action_phase_as_a_user_expects() {
        for case in action_cases() {
            assert_eq!(compute(&case.object), case.kstatus, "SequencerAction {}", case.name);
        }
    }

    #[test]
    fn a_sequencer_being_deleted_is_terminating() {
        let mut object = sequencer_cases().remove(0).object;
        object["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:13:20Z");
        assert_eq!(compute(&object), KStatus::Terminating);
    }

    #[test]
    fn the_sequencer_never_reports_reconciling_and_stalled_at_once() {
        for case in sequencer_cases() {
            let conditions = case.object["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let is_true = |t: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == "True");
            assert!(!(is_true("Reconciling") && is_true("Stalled")), "{}", case.name);
            if is_true("Ready") {
                assert!(!is_true("Reconciling") && !is_true("Stalled"), "{}", case.name);
            }
        }
    }

    #[test]
    fn health_fixtures_are_what_the_operator_writes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/health/fixtures.lua");
        let expected = lua_fixtures();
        if std::env::var_os("UPDATE_HEALTH_FIXTURES").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "{path} is out of date; run: UPDATE_HEALTH_FIXTURES=1 cargo test -p sequencer-operator health_fixtures"
        );
    }
}
