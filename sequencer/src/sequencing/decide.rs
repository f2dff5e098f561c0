//! The decision about every event of a group, from what the store returned: new, exact replay,
//! duplicate event id, duplicate command id or version conflict (or the whole group refused because
//! the stream is paused). A plain function of its inputs, with no I/O: the signed group commit (all
//! of its paths) and the legacy ingest both call it, and it is tested without a database.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::Receipt;
use crate::reason::{Reason, Refusal};

/// Which ingest asks: they answer duplicates differently (ves-wire.md §3.1 and §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Signed ingest: an exact replay answers the stored receipt; a repeat inside the group answers
    /// the receipt of its first copy.
    Signed,
    /// Legacy ingest: any repeat of an event id is refused (no receipts, not idempotent), and a
    /// command id counts as used by every earlier event of the request that got past the id check.
    Legacy,
}

/// What the store holds under a proposal's event id (within the proposal's tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Nothing: the id is free.
    Fresh,
    /// The same event, byte for byte, with its receipt (`None`: stored without one).
    ExactReplay(Option<Receipt>),
    /// An event of another stream of the tenant.
    OtherStream,
    /// Another event of this stream.
    Different,
}

/// One event to decide, with what the store said about its id.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    pub event_id: Uuid,
    pub command_id: Option<Uuid>,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub base_version: Option<u64>,
    /// What identifies the content (signing hash and agent signature): two proposals with the same id
    /// and content are the same event sent twice.
    pub content: (&'a [u8; 32], &'a [u8; 64]),
    pub prior: Prior,
    /// A refusal found before sequencing that only counts once the duplicate checks passed (the legacy
    /// payload hash).
    pub refused: Option<Refusal>,
}

/// What the store returned for the group's stream, read under its lock (or assumed, on the fast path).
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    pub paused: bool,
    /// Command ids of the proposals that the stream already used.
    pub commands: HashSet<Uuid>,
    /// Current version (number of stored events) of the entities the proposals name with a
    /// `base_version`; a missing entity is at version 0.
    pub versions: HashMap<(String, String), i64>,
}

/// What to do with one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Number and store it.
    Accept,
    /// An exact replay: answer the stored receipt, store nothing.
    Replay(Receipt),
    /// The same event as the accepted proposal at this index of the group: answer its receipt.
    SameAs(usize),
    /// Refused.
    Refuse(Refusal),
}

/// The stream is paused: nothing of the group may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused;

/// Decides every proposal of a group, in order: later proposals see the effect of earlier accepted
/// ones (their ids, commands and entity versions).
pub fn decide(flavour: Flavour, view: &StoreView, proposals: &[Proposal<'_>]) -> Result<Vec<Decision>, Paused> {
    if view.paused {
        return Err(Paused);
    }
    // NB: versions are tracked only when some proposal checks one; most groups have none.
    let track_versions = proposals.iter().any(|p| p.base_version.is_some());
    let mut versions: HashMap<(&str, &str), i64> = if track_versions {
        view.versions.iter().map(|((t, i), v)| ((t.as_str(), i.as_str()), *v)).collect()
    } else {
        HashMap::new()
    };
    let mut accepted_ids: HashMap<Uuid, usize> = HashMap::with_capacity(proposals.len());
    let mut seen_ids: HashSet<Uuid> = HashSet::new();
    let mut taken_commands: HashSet<Uuid> = HashSet::new();
    let mut decisions = Vec::with_capacity(proposals.len());

    for (i, p) in proposals.iter().enumerate() {
        let refuse = |reason: Reason, message: String| Decision::Refuse(Refusal::new(reason, message));
        let command_taken =
            |taken: &HashSet<Uuid>| p.command_id.filter(|c| view.commands.contains(c) || taken.contains(c));
        let decision = match flavour {
            Flavour::Signed => match &p.prior {
                Prior::ExactReplay(Some(r)) => Decision::Replay(r.clone()),
                Prior::ExactReplay(None) => {
                    refuse(Reason::DuplicateEventId, "Event already exists but receipt not found".into())
                }
                Prior::OtherStream => refuse(Reason::DuplicateEventId, "Event ID already exists".into()),
                Prior::Different => {
                    refuse(Reason::DuplicateEventId, "Event ID already exists with different contents".into())
                }
                Prior::Fresh => {
                    if let Some(&first) = accepted_ids.get(&p.event_id) {
                        let f = &proposals[first];
                        if f.content == p.content && f.command_id == p.command_id && f.base_version == p.base_version {
                            Decision::SameAs(first)
                        } else {
                            refuse(Reason::DuplicateEventId, "Event ID already exists with different contents".into())
                        }
                    } else if let Some(cmd) = command_taken(&taken_commands) {
                        refuse(Reason::DuplicateCommandId, format!("Command {cmd} already processed"))
                    } else if let Some(r) = &p.refused {
                        Decision::Refuse(r.clone())
                    } else {
                        check_version(p, &mut versions, track_versions)
                    }
                }
            },
            Flavour::Legacy => {
                if p.prior != Prior::Fresh || !seen_ids.insert(p.event_id) {
                    refuse(Reason::DuplicateEventId, format!("Event {} already exists", p.event_id))
                } else if let Some(cmd) = command_taken(&taken_commands) {
                    refuse(Reason::DuplicateCommandId, format!("Command {cmd} already processed"))
                } else {
                    if let Some(cmd) = p.command_id {
                        taken_commands.insert(cmd);
                    }
                    match &p.refused {
                        Some(r) => Decision::Refuse(r.clone()),
                        None => check_version(p, &mut versions, track_versions),
                    }
                }
            }
        };
        if decision == Decision::Accept {
            accepted_ids.insert(p.event_id, i);
            if let Some(cmd) = p.command_id {
                taken_commands.insert(cmd);
            }
        }
        decisions.push(decision);
    }
    Ok(decisions)
}

/// Accepts `p` unless its `base_version` is not its entity's current version.
fn check_version<'a>(p: &Proposal<'a>, versions: &mut HashMap<(&'a str, &'a str), i64>, track: bool) -> Decision {
    if !track {
        return Decision::Accept;
    }
    let version = versions.entry((p.entity_type, p.entity_id)).or_insert(0);
    match p.base_version {
        Some(expected) if expected as i64 != *version => {
            let actual = *version;
            Decision::Refuse(Refusal::new(
                Reason::VersionConflict { expected, actual },
                format!("Version conflict: expected {expected}, actual {actual}"),
            ))
        }
        _ => {
            *version += 1;
            Decision::Accept
        }
    }
}

/// The version each entity that the proposals check (`base_version`) must be at for every one of them
/// to be accepted: an entity's proposal with `base_version` b after k of the entity's proposals implies
/// b - k. `None` when the proposals' own checks disagree (or imply a negative version), so that one is
/// refused whatever the store holds; empty when none checks a version. The fast path writes a group
/// only where the store's versions are these (`store::events::append_at_head`).
pub fn implied_versions(proposals: &[Proposal<'_>]) -> Option<HashMap<(String, String), i64>> {
    if proposals.iter().all(|p| p.base_version.is_none()) {
        return Some(HashMap::new());
    }
    let mut before: HashMap<(&str, &str), i64> = HashMap::new();
    let mut implied: HashMap<(String, String), i64> = HashMap::new();
    for p in proposals {
        let k = before.entry((p.entity_type, p.entity_id)).or_insert(0);
        if let Some(b) = p.base_version {
            let v = i64::try_from(b).ok()?.checked_sub(*k).filter(|v| *v >= 0)?;
            if *implied.entry((p.entity_type.to_owned(), p.entity_id.to_owned())).or_insert(v) != v {
                return None;
            }
        }
        *k += 1;
    }
    Some(implied)
}

#[cfg(test)]
mod tests;
