//! The decision, without a database: examples of each case, then properties over random groups that
//! mix replays, duplicate ids, duplicate commands, version conflicts and new events.

use std::collections::{HashMap, HashSet};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const A: [u8; 32] = [1; 32];
const B: [u8; 32] = [2; 32];
const SIG: [u8; 64] = [7; 64];

fn receipt(event_id: Uuid, n: i64) -> Receipt {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    Receipt::new(Uuid::nil(), event_id, n, &at.to_rfc3339(), &[9; 32], None)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn proposal(event_id: Uuid) -> Proposal<'static> {
    Proposal {
        event_id,
        command_id: None,
        entity_type: "Order",
        entity_id: "1",
        base_version: None,
        content: (&A, &SIG),
        prior: Prior::Fresh,
        refused: None,
    }
}

fn refused(d: &Decision) -> Option<&Reason> {
    match d {
        Decision::Refuse(r) => Some(&r.reason),
        _ => None,
    }
}

#[test]
fn new_events_are_accepted_in_order() {
    let group = [proposal(id(1)), proposal(id(2)), proposal(id(3))];
    let d = decide(Flavour::Signed, &StoreView::default(), &group).unwrap();
    assert_eq!(d, vec![Decision::Accept; 3]);
}

#[test]
fn a_paused_stream_decides_nothing() {
    let view = StoreView { paused: true, ..Default::default() };
    assert_eq!(decide(Flavour::Signed, &view, &[proposal(id(1))]), Err(Paused));
    assert_eq!(decide(Flavour::Legacy, &view, &[proposal(id(1))]), Err(Paused));
}

#[test]
fn an_exact_replay_answers_the_stored_receipt_and_other_reuses_of_the_id_are_refused() {
    let r = receipt(id(1), 7);
    let mut group = [proposal(id(1)), proposal(id(2)), proposal(id(3)), proposal(id(4))];
    group[0].prior = Prior::ExactReplay(Some(r.clone()));
    group[1].prior = Prior::ExactReplay(None);
    group[2].prior = Prior::OtherStream;
    group[3].prior = Prior::Different;
    let d = decide(Flavour::Signed, &StoreView::default(), &group).unwrap();
    assert_eq!(d[0], Decision::Replay(r));
    let messages: Vec<&str> = d[1..]
        .iter()
        .map(|d| match d {
            Decision::Refuse(r) if r.reason == Reason::DuplicateEventId => r.message.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        messages,
        [
            "Event already exists but receipt not found",
            "Event ID already exists",
            "Event ID already exists with different contents"
        ]
    );
}

#[test]
fn the_same_event_twice_in_a_group_answers_the_first_copys_receipt_and_a_changed_copy_is_refused() {
    let mut changed = proposal(id(1));
    changed.content = (&B, &SIG);
    let group = [proposal(id(1)), proposal(id(1)), changed];
    let d = decide(Flavour::Signed, &StoreView::default(), &group).unwrap();
    assert_eq!(d[0], Decision::Accept);
    assert_eq!(d[1], Decision::SameAs(0));
    assert_eq!(refused(&d[2]), Some(&Reason::DuplicateEventId));
}

#[test]
fn a_command_used_in_the_stream_or_earlier_in_the_group_is_refused() {
    let (used, fresh) = (id(100), id(101));
    let view = StoreView { commands: HashSet::from([used]), ..Default::default() };
    let mut group = [proposal(id(1)), proposal(id(2)), proposal(id(3))];
    group[0].command_id = Some(used);
    group[1].command_id = Some(fresh);
    group[2].command_id = Some(fresh);
    let d = decide(Flavour::Signed, &view, &group).unwrap();
    assert_eq!(refused(&d[0]), Some(&Reason::DuplicateCommandId));
    assert_eq!(d[1], Decision::Accept);
    match &d[2] {
        Decision::Refuse(r) => assert_eq!(r.message, format!("Command {fresh} already processed")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn base_versions_see_the_stored_version_and_earlier_accepted_events_of_the_group() {
    let view = StoreView { versions: HashMap::from([(("Order".into(), "1".into()), 2)]), ..Default::default() };
    let mut group = [proposal(id(1)), proposal(id(2)), proposal(id(3)), proposal(id(4))];
    group[0].base_version = Some(2);
    group[1].base_version = Some(2); // the first one moved it to 3
    group[2].base_version = None; // no check, but it moves the version to 4
    group[3].base_version = Some(4);
    let d = decide(Flavour::Signed, &view, &group).unwrap();
    assert_eq!(d[0], Decision::Accept);
    assert_eq!(
        d[1],
        Decision::Refuse(Refusal::new(
            Reason::VersionConflict { expected: 2, actual: 3 },
            "Version conflict: expected 2, actual 3"
        ))
    );
    assert_eq!(d[2], Decision::Accept);
    assert_eq!(d[3], Decision::Accept);
}

#[test]
fn legacy_ingest_refuses_every_repeat_and_counts_commands_of_refused_events_as_used() {
    let mut group =
        [proposal(id(1)), proposal(id(1)), proposal(id(2)), proposal(id(3)), proposal(id(4)), proposal(id(5))];
    group[2].command_id = Some(id(100));
    group[2].refused = Some(Refusal::new(Reason::InvalidPayloadHash, "Payload hash verification failed"));
    group[3].command_id = Some(id(100));
    group[5].prior = Prior::ExactReplay(None);
    let d = decide(Flavour::Legacy, &StoreView::default(), &group).unwrap();
    let reasons: Vec<Option<&Reason>> = d.iter().map(refused).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some(&Reason::DuplicateEventId),
            Some(&Reason::InvalidPayloadHash),
            Some(&Reason::DuplicateCommandId),
            None,
            Some(&Reason::DuplicateEventId),
        ]
    );
    assert_eq!((&d[0], &d[4]), (&Decision::Accept, &Decision::Accept));
}

// ---- properties over random groups ----

/// (event id, changed content, command, entity, base version)
type Event = (u8, bool, Option<u8>, u8, Option<u8>);

/// A small universe so that collisions (replays, duplicates, conflicts) are frequent.
#[derive(Debug, Clone)]
struct Case {
    /// What the store holds per event id 0..8 (0: fresh, 1: exact replay, 2: replay without receipt,
    /// 3: other stream, 4: different).
    priors: Vec<u8>,
    stored_commands: Vec<bool>,
    stored_versions: Vec<i64>,
    events: Vec<Event>,
    legacy: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..5], 8),
        prop::collection::vec(prop::bool::weighted(0.2), 5),
        prop::collection::vec(0i64..3, 3),
        prop::collection::vec(
            (
                0u8..8,
                prop::bool::weighted(0.2),
                prop::option::weighted(0.4, 0u8..5),
                0u8..3,
                prop::option::weighted(0.4, 0u8..4),
            ),
            0..40,
        ),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(priors, stored_commands, stored_versions, events, legacy)| Case {
            priors,
            stored_commands,
            stored_versions,
            events,
            legacy,
        })
}

const ENTITIES: [&str; 3] = ["a", "b", "c"];

fn run(case: &Case) -> (Vec<Proposal<'static>>, StoreView, Vec<Decision>) {
    let proposals: Vec<Proposal<'static>> = case
        .events
        .iter()
        .map(|&(e, changed, cmd, entity, base)| Proposal {
            event_id: id(u128::from(e)),
            command_id: cmd.map(|c| id(1000 + u128::from(c))),
            entity_type: "T",
            entity_id: ENTITIES[entity as usize],
            base_version: base.map(u64::from),
            content: (if changed { &B } else { &A }, &SIG),
            prior: match case.priors[e as usize] {
                0 => Prior::Fresh,
                1 => Prior::ExactReplay(Some(receipt(id(u128::from(e)), i64::from(e) + 1))),
                2 => Prior::ExactReplay(None),
                3 => Prior::OtherStream,
                _ => Prior::Different,
            },
            refused: None,
        })
        .collect();
    let view = StoreView {
        paused: false,
        commands: (0..5).filter(|&c| case.stored_commands[c]).map(|c| id(1000 + c as u128)).collect(),
        versions: ENTITIES
            .iter()
            .zip(&case.stored_versions)
            .filter(|(_, v)| **v > 0)
            .map(|(e, v)| (("T".to_owned(), (*e).to_owned()), *v))
            .collect(),
    };
    let flavour = if case.legacy { Flavour::Legacy } else { Flavour::Signed };
    let decisions = decide(flavour, &view, &proposals).expect("not paused");
    (proposals, view, decisions)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_event_gets_exactly_one_decision_and_a_paused_stream_none(case in case()) {
        let (proposals, mut view, decisions) = run(&case);
        prop_assert_eq!(decisions.len(), proposals.len());
        view.paused = true;
        prop_assert_eq!(decide(Flavour::Signed, &view, &proposals), Err(Paused));
    }

    #[test]
    fn accepted_events_never_reuse_a_stored_or_accepted_id_or_command(case in case()) {
        let (proposals, view, decisions) = run(&case);
        let mut ids = HashSet::new();
        let mut commands = HashSet::new();
        for (p, d) in proposals.iter().zip(&decisions) {
            if *d != Decision::Accept {
                continue;
            }
            prop_assert_eq!(&p.prior, &Prior::Fresh);
            prop_assert!(ids.insert(p.event_id), "id {} accepted twice", p.event_id);
            if let Some(c) = p.command_id {
                prop_assert!(!view.commands.contains(&c), "stored command {} accepted", c);
                prop_assert!(commands.insert(c), "command {} accepted twice", c);
            }
        }
    }

    #[test]
    fn an_id_the_store_holds_is_answered_from_the_store_and_never_stored_again(case in case()) {
        let (proposals, _, decisions) = run(&case);
        for (p, d) in proposals.iter().zip(&decisions) {
            match (&p.prior, d) {
                (Prior::Fresh, _) => {}
                (Prior::ExactReplay(Some(r)), d) if !case.legacy => prop_assert_eq!(d, &Decision::Replay(r.clone())),
                (_, d) => prop_assert_eq!(refused(d), Some(&Reason::DuplicateEventId)),
            }
        }
    }

    #[test]
    fn base_versions_hold_exactly_for_accepted_events_and_conflicts_report_the_actual_version(case in case()) {
        let (proposals, view, decisions) = run(&case);
        let mut version: HashMap<&str, i64> = HashMap::new();
        for (p, d) in proposals.iter().zip(&decisions) {
            let current = *version
                .entry(p.entity_id)
                .or_insert_with(|| view.versions.get(&("T".to_owned(), p.entity_id.to_owned())).copied().unwrap_or(0));
            match d {
                Decision::Accept => {
                    if let Some(b) = p.base_version {
                        prop_assert_eq!(b as i64, current);
                    }
                    *version.get_mut(p.entity_id).unwrap() += 1;
                }
                Decision::Refuse(r) => {
                    if let Reason::VersionConflict { expected, actual } = r.reason {
                        prop_assert_eq!(Some(expected), p.base_version);
                        prop_assert_eq!(actual, current);
                        prop_assert_ne!(expected as i64, actual);
                    }
                }
                _ => {}
            }
        }
    }

    /// The fast path assumes every event new and its entities at the versions the group implies, and
    /// writes the group only if the store's versions are those: it must write exactly the groups that
    /// the careful path, reading the versions, would accept whole.
    #[test]
    fn the_implied_versions_are_the_only_store_versions_that_accept_a_fresh_group_whole(case in case()) {
        let (mut proposals, mut view, _) = run(&case);
        for p in &mut proposals {
            p.prior = Prior::Fresh;
        }
        view.commands.clear();
        let careful = decide(Flavour::Signed, &view, &proposals).expect("not paused");
        let whole = careful.iter().all(|d| *d == Decision::Accept);
        let fast = implied_versions(&proposals).is_some_and(|implied| {
            let assumed = StoreView { versions: implied.clone(), ..StoreView::default() };
            let stored = |k: &(String, String)| view.versions.get(k).copied().unwrap_or(0);
            decide(Flavour::Signed, &assumed, &proposals).expect("not paused").iter().all(|d| *d == Decision::Accept)
                && implied.iter().all(|(k, v)| stored(k) == *v)
        });
        prop_assert_eq!(fast, whole, "{:?}", careful);
    }

    #[test]
    fn a_repeat_in_the_group_points_at_its_accepted_first_copy(case in case()) {
        let (proposals, _, decisions) = run(&case);
        for (i, d) in decisions.iter().enumerate() {
            if let Decision::SameAs(j) = *d {
                prop_assert!(!case.legacy, "legacy ingest never answers a repeat with a receipt");
                prop_assert!(j < i);
                prop_assert_eq!(&decisions[j], &Decision::Accept);
                let (a, b) = (&proposals[i], &proposals[j]);
                prop_assert_eq!(a.event_id, b.event_id);
                prop_assert_eq!(a.content, b.content);
                prop_assert_eq!(a.command_id, b.command_id);
                prop_assert_eq!(a.base_version, b.base_version);
            }
            if case.legacy {
                prop_assert!(!matches!(d, Decision::Replay(_)), "legacy ingest never answers a replay with a receipt");
            }
        }
    }

    #[test]
    fn nothing_is_refused_without_a_cause(case in case()) {
        let (proposals, view, decisions) = run(&case);
        let mut seen_ids = HashSet::new();
        let mut used_commands: HashSet<Uuid> = view.commands.clone();
        for (p, d) in proposals.iter().zip(&decisions) {
            let repeated = !seen_ids.insert(p.event_id);
            let command_used = p.command_id.is_some_and(|c| used_commands.contains(&c));
            if let Some(reason) = refused(d) {
                match reason {
                    Reason::DuplicateEventId => prop_assert!(p.prior != Prior::Fresh || repeated),
                    Reason::DuplicateCommandId => prop_assert!(command_used),
                    Reason::VersionConflict { .. } => prop_assert!(p.base_version.is_some()),
                    other => prop_assert!(false, "unexpected reason {}", other),
                }
            }
            let passed_id_check = p.prior == Prior::Fresh && (!repeated || !case.legacy);
            if *d == Decision::Accept || (case.legacy && passed_id_check && !command_used) {
                used_commands.extend(p.command_id);
            }
        }
    }
}
