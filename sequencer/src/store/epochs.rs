//! Event ids by epoch (migrations 0024-0026): the database keeps an id unique within the epoch it was
//! written in, and this process keeps it unique across epochs.
//!
//! The unique index of event ids leads with the epoch, so the ids of the current epoch are one small
//! region of it that stays in the buffers however long the log grows, and a closed epoch's region is
//! never written again. An id of a closed epoch is no longer caught by the index: every process keeps
//! a binary fuse filter of each closed epoch's (tenant, id) pairs, and a write goes ahead at once only
//! where every filter rules its ids out; where one cannot (a replay, or one id in about 65,536 per
//! filter), the id is looked up in that epoch's region first, as every id is in an epoch this process
//! has no filter of yet. Lookups by id (replays, reads, proofs) look only in the epochs whose filter may
//! hold it and in those this process has no filter of.
//!
//! NB: written here, not taken from a crate, because the protocol is the database's: the filters come
//! from `xorf` (16-bit binary fuse filters, about 2.26 bytes an id, one false positive in 65,536); what
//! is here is which epochs a lookup must see and which epoch a write may go into. 16-bit rather than
//! 8-bit (1.13 bytes, one in 256): with ten closed epochs at 10^7 events, an 8-bit filter cannot rule
//! out some id of nearly every 100-event group, and each such group costs a lookup before its write.
//!
//! **How an epoch closes without losing an id.** A writer reads the current epoch from the
//! `event_id_epochs` row under a share lock, in the same statement (or transaction) that writes, and
//! writes nothing if it is not the epoch whose predecessors it screened the ids against
//! ([`IdEpochs::screen`]). The worker leader advances the epoch under the table's EXCLUSIVE lock
//! ([`Store::advance_event_id_epoch`]), which waits for every writer holding the share lock and makes
//! later ones queue behind it (a row lock alone would let share lockers overtake it for ever). So once
//! the new epoch is committed, every write into the old one has committed, and a filter built from it
//! afterwards holds every one of its ids. Every writer takes this lock before the lock of its stream's
//! counter row, so the two never wait for each other in a cycle.
//!
//! **Lookups take the tenant as a column.** A lookup of ids joins them, with their tenant repeated in an
//! array, to the log, rather than saying `tenant_id = $1`. With the constant, PostgreSQL estimates the
//! tenant's rows from the column's statistics, where a tenant that is new since the last ANALYZE, or small
//! beside the large tenants that fill the most-common-values list, has about none. For such a tenant the
//! planner took any index that leads with `tenant_id` for as good as the epoch-keyed one, and chose one
//! of those: each lookup read all of the tenant's rows so far, heap pages included. Through the
//! sequencer on a log of 1.6 × 10^7 events, the 64-new-stream load (a new tenant) read 23 heap blocks per
//! event against 1.3 on an empty database, PostgreSQL spent 43-48 µs of CPU per event against 20, and the
//! probe of [`any_stored`] was the active statement in two samples of three (`scripts/profile-growth-pg`;
//! README § Performance, "A lookup planned for a tenant the statistics do not know"). As a column the
//! tenant is known only row by row, so the plan that reads only the pairs' own index entries, a nested
//! loop over them into the epoch-keyed index, is the cheapest whatever the statistics say.

use std::collections::HashMap;
use std::sync::RwLock;

use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;
use xorf::{BinaryFuse16, Descriptor, DmaSerializable, Filter};

use crate::error::Result;
use crate::store::Store;

/// How many events an epoch holds before the leader closes it, by default (`EVENT_ID_EPOCH_EVENTS`).
/// Its region of the index is then about 70 MB, half of PostgreSQL's default buffers; 2^18 measured no
/// better on 1.4-2 × 10^7 events (README, "Event ids by epoch, built"), and needs four times the filters.
pub const DEFAULT_EPOCH_EVENTS: i64 = 1 << 20;

/// The share lock a writing statement takes on the epoch row, as a CTE named `ep`: evaluated before the
/// statement locks any stream's counter row.
pub const LOCKED_EPOCH_CTE: &str = "ep AS (SELECT current FROM event_id_epochs FOR SHARE)";

/// The closed epochs' filters this process holds, and the newest epoch it has seen current.
#[derive(Default)]
pub struct IdEpochs {
    state: RwLock<State>,
    /// Serialises [`Store::refresh_id_epochs`], so that a filter is built once.
    building: tokio::sync::Mutex<()>,
    /// Wakes the refresher when an epoch closed that has no filter here.
    unfiltered: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// The newest epoch seen current (in the database, when this process last looked).
    current: i32,
    /// The filters of epochs `0..filters.len()`, in order (`None`: an epoch without ids).
    filters: Vec<Option<BinaryFuse16>>,
}

/// Where a group of ids may be written, and what must be looked up first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// The newest epoch this process has seen current: the group is written into it, by a statement that
    /// writes nothing if it is no longer current.
    pub epoch: i32,
    /// The (closed epoch, id) pairs to look up before: every id in each closed epoch this process has no
    /// filter of yet, and each id a closed epoch's filter cannot rule out. A group with one of them
    /// stored is decided under the locks.
    pub maybe: Vec<(i32, Uuid)>,
}

/// A (tenant, id) pair as a filter's key: the four 64-bit halves folded through MurmurHash3's 64-bit
/// finaliser. Fixed here, not `std`'s hasher (whose algorithm may change between Rust releases),
/// because filters are stored and read by other processes and releases ([`FILTER_FORMAT`]). Ids chosen
/// to collide cost lookups, never an id.
fn key(tenant_id: Uuid, event_id: Uuid) -> u64 {
    fn fmix64(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    let (t, e) = (tenant_id.as_u128(), event_id.as_u128());
    [(t >> 64) as u64, t as u64, (e >> 64) as u64, e as u64]
        .into_iter()
        .fold(0x9e37_79b9_7f4a_7c15, |h, half| fmix64(h ^ half))
}

/// The format of a stored filter (`event_id_epoch_filters.format`): [`key`]'s keys in a `BinaryFuse16`,
/// stored as its descriptor and then its fingerprints ([`encode`]).
pub const FILTER_FORMAT: i16 = 1;

/// A filter's bytes as stored: the descriptor as `xorf` lays it out, then the fingerprints
/// little-endian (`xorf`'s own layout of them is the machine's).
fn encode(filter: &BinaryFuse16) -> Vec<u8> {
    let mut bytes = vec![0; BinaryFuse16::DESCRIPTOR_LEN];
    filter.dma_copy_descriptor_to(&mut bytes);
    bytes.extend(filter.fingerprints.iter().flat_map(|f| f.to_le_bytes()));
    bytes
}

/// A stored filter, if its bytes are one: its descriptor must address only fingerprints it has (a
/// lookup would read past them otherwise).
fn decode(bytes: &[u8]) -> Option<BinaryFuse16> {
    let (d, fingerprints) = bytes.split_at_checked(BinaryFuse16::DESCRIPTOR_LEN)?;
    let u32_at = |i: usize| u32::from_le_bytes(d[i..i + 4].try_into().expect("4 bytes"));
    let descriptor = Descriptor {
        seed: u64::from_le_bytes(d[0..8].try_into().expect("8 bytes")),
        segment_length: u32_at(8),
        segment_length_mask: u32_at(12),
        segment_count_length: u32_at(16),
    };
    let length = descriptor.segment_length;
    let addressed = u64::from(descriptor.segment_count_length) + 2 * u64::from(length);
    let fingerprints: Box<[u16]> = fingerprints.chunks_exact(2).map(|f| u16::from_le_bytes([f[0], f[1]])).collect();
    (length.is_power_of_two() && descriptor.segment_length_mask == length - 1 && fingerprints.len() as u64 >= addressed)
        .then_some(BinaryFuse16 { descriptor, fingerprints })
}

impl IdEpochs {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `current` is (or was) the database's current epoch.
    pub fn observe(&self, current: i32) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.current = s.current.max(current);
        if s.filters.len() as i32 != s.current {
            self.unfiltered.notify_one();
        }
    }

    /// Returns once an epoch without a filter here has been seen closed (at once if one was since the
    /// last call).
    pub async fn unfiltered(&self) {
        self.unfiltered.notified().await
    }

    /// The newest epoch this process has seen current.
    pub fn current(&self) -> i32 {
        self.state().current
    }

    /// The epochs with a filter here: `0..filtered()`.
    pub fn filtered(&self) -> i32 {
        self.state().filters.len() as i32
    }

    /// The filters' size in memory.
    pub fn filter_bytes(&self) -> usize {
        self.state().filters.iter().flatten().map(|f| f.len() * 2).sum()
    }

    /// Which of these ids of the tenant must be looked up in which closed epoch before they are written
    /// into the current one. Closed epochs never change, so what a lookup finds there stays true.
    pub fn screen(&self, tenant_id: Uuid, ids: &[Uuid]) -> Screen {
        let s = self.state();
        let mut maybe = Vec::new();
        for id in ids {
            let k = key(tenant_id, *id);
            for (epoch, filter) in s.filters.iter().enumerate() {
                if filter.as_ref().is_some_and(|f| f.contains(&k)) {
                    maybe.push((epoch as i32, *id));
                }
            }
            // NB: until its filter is built (seconds after it closes), an epoch is looked in for every id.
            maybe.extend((s.filters.len() as i32..s.current).map(|epoch| (epoch, *id)));
        }
        Screen { epoch: s.current, maybe }
    }

    /// Where a lookup of these ids must look: the filtered epochs that may hold one of them, and every
    /// epoch from the first without a filter on ([`epochs_condition`]).
    pub fn lookup(&self, tenant_id: Uuid, ids: &[Uuid]) -> (Vec<i32>, i32) {
        let s = self.state();
        let keys: Vec<u64> = ids.iter().map(|id| key(tenant_id, *id)).collect();
        let maybe = s
            .filters
            .iter()
            .enumerate()
            .filter(|(_, f)| f.as_ref().is_some_and(|f| keys.iter().any(|k| f.contains(k))))
            .map(|(e, _)| e as i32)
            .collect();
        (maybe, s.filters.len() as i32)
    }

    fn add_filter(&self, epoch: i32, filter: Option<BinaryFuse16>) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.filters.len() as i32 == epoch {
            s.filters.push(filter);
        }
    }
}

/// The condition on `id_epoch` of a lookup by id: the epochs in the `int[]` parameter `maybe`, and every
/// epoch from the `int` parameter `first` to the current one, read in the statement (so that an epoch
/// this process has not seen yet is looked in too). `id_epoch = ANY(...)` with the list evaluated once:
/// an index condition of the epoch-keyed index, one descent per epoch and id.
pub fn epochs_condition(maybe: &str, first: &str) -> String {
    format!(
        "id_epoch = ANY({maybe}::int[] || ARRAY(SELECT generate_series({first}::int, current) FROM event_id_epochs))"
    )
}

/// Takes the share lock on the epoch row for the rest of the transaction and returns the current epoch
/// (see the module's comment). Take it before any stream's counter row.
pub async fn lock_current(conn: &mut PgConnection) -> Result<i32> {
    Ok(sqlx::query_scalar("SELECT current FROM event_id_epochs FOR SHARE").fetch_one(conn).await?)
}

/// [`any_stored`]'s statement: `$1` the tenant (once per pair), `$2` the epochs, `$3` the ids.
pub const ANY_STORED: &str = "SELECT EXISTS (SELECT 1 \
       FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS p(tenant_id, epoch, event_id) \
       JOIN ves_events v ON v.id_epoch = p.epoch AND v.tenant_id = p.tenant_id AND v.event_id = p.event_id)";

/// Whether any of these (epoch, id) pairs of the tenant is stored.
///
/// NB: the tenant is a column of the pairs, not a constant of the statement (the module's comment).
pub async fn any_stored(conn: &mut PgConnection, tenant_id: Uuid, pairs: &[(i32, Uuid)]) -> Result<bool> {
    let (epochs, ids): (Vec<i32>, Vec<Uuid>) = pairs.iter().copied().unzip();
    Ok(sqlx::query_scalar(ANY_STORED).bind(vec![tenant_id; ids.len()]).bind(epochs).bind(ids).fetch_one(conn).await?)
}

/// Every event id of the tenant stored in more than one epoch, with its epochs in order, over the epochs
/// up to the current one when it starts. `verify` asks this once per tenant. It reads the epoch-keyed
/// index, not the filters: the filters are what kept the ids unique across epochs, and a check must not
/// trust what it checks. Each epoch's part of the tenant is one range of the index, in id order, so the
/// statement is one pass over the tenant's ids (1.5-2 s for 10^6 ids in 16 epochs, on two cores), where a
/// lookup of each id in every epoch costs a descent per id and epoch (116 s for the same ids).
pub async fn ids_in_several_epochs(conn: &mut PgConnection, tenant_id: Uuid) -> Result<HashMap<Uuid, Vec<i32>>> {
    let current: i32 = sqlx::query_scalar("SELECT current FROM event_id_epochs").fetch_one(&mut *conn).await?;
    // One branch per epoch, so that each is a range scan of the index (`id_epoch = ANY(...)` would be one
    // descent per epoch too, but the planner then sorts or hashes with no index order to merge).
    let branches = (0..=current)
        .map(|epoch| {
            // NB: the tenant as a column (the module's comment).
            format!(
                "SELECT event_id, {epoch} AS epoch FROM ves_events \
                  WHERE (id_epoch, tenant_id) IN (SELECT {epoch}, unnest($1::uuid[]))"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!(
        "SELECT event_id, array_agg(epoch ORDER BY epoch) FROM ({branches}) ids GROUP BY event_id HAVING COUNT(*) > 1"
    );
    let rows: Vec<(Uuid, Vec<i32>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(vec![tenant_id]).fetch_all(conn).await?;
    Ok(rows.into_iter().collect())
}

impl Store {
    /// This process's filters of closed epochs.
    pub fn id_epochs(&self) -> &IdEpochs {
        &self.epochs
    }

    /// This store with `other`'s filters of closed epochs (a read replica's pool, with the primary's).
    pub fn with_id_epochs_of(mut self, other: &Store) -> Store {
        self.epochs = other.epochs.clone();
        self
    }

    /// Reads the current epoch and takes the filter of every closed epoch this process has none of,
    /// oldest first: as stored by the process that built it, or built from the epoch's ids (and stored).
    /// Returns how many it built.
    pub async fn refresh_id_epochs(&self) -> Result<usize> {
        let _building = self.epochs.building.lock().await;
        let current: i32 = sqlx::query_scalar("SELECT current FROM event_id_epochs").fetch_one(self.pool()).await?;
        self.epochs.observe(current);
        let from = self.epochs.filtered();
        // NB: every replica looks every few seconds; with every closed epoch filtered, one read is all.
        if from >= current {
            return Ok(0);
        }
        let mut stored: std::collections::HashMap<i32, Option<Vec<u8>>> = sqlx::query_as(
            "SELECT epoch, filter FROM event_id_epoch_filters WHERE format = $1 AND epoch >= $2 AND epoch < $3",
        )
        .bind(FILTER_FORMAT)
        .bind(from)
        .bind(current)
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .collect();
        let mut built = 0;
        for epoch in from..current {
            let filter = match stored.remove(&epoch) {
                Some(None) => None,
                Some(Some(bytes)) if let Some(filter) = decode(&bytes) => Some(filter),
                // NB: a malformed filter is built again (and not stored over the old one).
                found => {
                    built += 1;
                    self.build_id_filter(epoch, found.is_none()).await?
                }
            };
            self.epochs.add_filter(epoch, filter);
        }
        Ok(built)
    }

    /// Builds the filter of the closed epoch `epoch` from its ids, and stores it if `store`.
    ///
    /// NB: read by a bitmap heap scan, which visits each of the epoch's heap pages once, in order. The
    /// planner's choice, an index-only scan, fetches a heap row per id where the visibility map is not
    /// set (an epoch just closed, where autovacuum has not been yet), in the index's random order:
    /// measured on a log of 1.5 × 10^7 events, 2.7 µs and 0.65 buffer reads per id against 0.55 µs and
    /// 0.09 this way, and the buffers it churns are the ones ingest needs.
    async fn build_id_filter(&self, epoch: i32, store: bool) -> Result<Option<BinaryFuse16>> {
        let mut tx = self.pool().begin().await?;
        sqlx::raw_sql(
            "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; \
             SET LOCAL enable_seqscan = off; SET LOCAL jit = off",
        )
        .execute(&mut *tx)
        .await?;
        let mut keys: Vec<u64> =
            sqlx::query_as::<_, (Uuid, Uuid)>("SELECT tenant_id, event_id FROM ves_events WHERE id_epoch = $1")
                .bind(epoch)
                .fetch(&mut *tx)
                .map_ok(|(t, e)| key(t, e))
                .try_collect()
                .await?;
        tx.commit().await?;
        keys.sort_unstable();
        keys.dedup();
        let filter = if keys.is_empty() {
            None
        } else {
            Some(BinaryFuse16::try_from(&keys).map_err(|e| {
                crate::error::Error::Internal(format!("building the filter of event id epoch {epoch}: {e}"))
            })?)
        };
        if store {
            sqlx::query(
                "INSERT INTO event_id_epoch_filters (epoch, format, ids, filter) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(epoch)
            .bind(FILTER_FORMAT)
            .bind(keys.len() as i64)
            .bind(filter.as_ref().map(encode))
            .execute(self.pool())
            .await?;
        }
        tracing::info!(epoch, ids = keys.len(), "built the filter of a closed event id epoch");
        Ok(filter)
    }

    /// Closes the current epoch if the log has grown by `epoch_events` since it became current (the
    /// worker leader's duty). Returns the new epoch, if it advanced.
    ///
    /// The count is the sum of the streams' heads, not a count of the epoch's rows, which would read
    /// the whole epoch's region of the index (and the table, where the visibility map is not set)
    /// every time. The advance itself waits for every writer of the old epoch (the module's comment),
    /// at most 500 ms, after which it gives up (`None`) and the writers queued behind it go on.
    pub async fn advance_event_id_epoch(&self, epoch_events: i64) -> Result<Option<i32>> {
        let (current, grown): (i32, i64) = sqlx::query_as(
            "SELECT current, (SELECT COALESCE(SUM(current_sequence), 0) FROM sequence_counters)::bigint \
               - events_at_start FROM event_id_epochs",
        )
        .fetch_one(self.pool())
        .await?;
        if grown < epoch_events {
            return Ok(None);
        }
        let mut tx = self.pool().begin().await?;
        // NB: every writer queues behind this lock while it waits, so it waits briefly: a writer that
        // holds the share lock longer (a transaction waiting for a stream's counter row, say) makes this
        // advance give up and the next check try again.
        sqlx::query("SET LOCAL lock_timeout = '500ms'").execute(&mut *tx).await?;
        if let Err(e) = sqlx::query("LOCK TABLE event_id_epochs IN EXCLUSIVE MODE").execute(&mut *tx).await {
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") {
                tracing::info!("the event id epoch's writers held it for more than 500 ms; closing it later");
                return Ok(None);
            }
            return Err(e.into());
        }
        let advanced: Option<i32> = sqlx::query_scalar(
            "UPDATE event_id_epochs SET current = current + 1, advanced_at = NOW(), \
               events_at_start = (SELECT COALESCE(SUM(current_sequence), 0) FROM sequence_counters) \
             WHERE current = $1 RETURNING current",
        )
        .bind(current)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(epoch) = advanced {
            self.epochs.observe(epoch);
            tracing::info!(epoch, "event id epoch advanced");
        }
        Ok(advanced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of(tenant: Uuid, ids: &[Uuid]) -> Option<BinaryFuse16> {
        let mut keys: Vec<u64> = ids.iter().map(|id| key(tenant, *id)).collect();
        keys.sort_unstable();
        keys.dedup();
        Some(BinaryFuse16::try_from(&keys).unwrap())
    }

    #[test]
    fn a_closed_epoch_is_looked_in_for_ids_its_filter_cannot_rule_out_or_all_until_it_has_one() {
        let epochs = IdEpochs::default();
        let tenant = Uuid::from_u128(1);
        let ids: Vec<Uuid> = (0..1000u128).map(Uuid::from_u128).collect();
        assert_eq!(epochs.screen(tenant, &ids[..1]), Screen { epoch: 0, maybe: vec![] });
        epochs.observe(2);
        epochs.observe(1);
        assert_eq!(epochs.current(), 2, "an older observation does not move the epoch back");
        let every = |id: Uuid| vec![(0, id), (1, id)];
        assert_eq!(epochs.screen(tenant, &ids[..1]), Screen { epoch: 2, maybe: every(ids[0]) });
        assert_eq!(epochs.lookup(tenant, &ids[..1]), (vec![], 0), "every epoch is looked in");
        epochs.add_filter(0, filter_of(tenant, &ids[..500]));
        epochs.add_filter(0, None);
        assert_eq!(epochs.filtered(), 1, "a filter is added once, in order");
        assert_eq!(epochs.screen(tenant, &ids[7..8]), Screen { epoch: 2, maybe: every(ids[7]) });
        epochs.add_filter(1, None);
        // A stored id is never ruled out; another tenant's is (but for false positives).
        assert_eq!(epochs.screen(tenant, &ids[7..8]), Screen { epoch: 2, maybe: vec![(0, ids[7])] });
        assert_eq!(epochs.lookup(tenant, &ids[7..8]), (vec![0], 2));
        let maybe = epochs.screen(Uuid::from_u128(2), &ids[..500]).maybe;
        assert!(maybe.len() < 20, "false positives are rare: {}", maybe.len());
        let maybe = epochs.screen(tenant, &ids[500..]).maybe;
        assert!(maybe.len() < 20, "false positives are rare: {}", maybe.len());
        assert!(epochs.filter_bytes() >= 1000 && epochs.filter_bytes() < 4000, "{}", epochs.filter_bytes());
    }

    #[test]
    fn a_stored_filter_reads_back_as_built_and_a_malformed_one_not_at_all() {
        let tenant = Uuid::from_u128(7);
        let ids: Vec<Uuid> = (0..10_000u128).map(|i| Uuid::from_u128(i * 7919)).collect();
        let filter = filter_of(tenant, &ids).unwrap();
        let bytes = encode(&filter);
        let back = decode(&bytes).expect("a filter's own bytes");
        assert_eq!((&back.descriptor, &back.fingerprints), (&filter.descriptor, &filter.fingerprints));
        assert!(ids.iter().all(|id| back.contains(&key(tenant, *id))));
        assert!(decode(&bytes[..bytes.len() - 2]).is_none(), "fingerprints missing");
        assert!(decode(&bytes[..10]).is_none(), "no descriptor");
        let mut odd = bytes.clone();
        odd[8] ^= 1;
        assert!(decode(&odd).is_none(), "a segment length that is no power of two");
        // The key is fixed, for stored filters read by later releases.
        assert_eq!(key(Uuid::from_u128(1), Uuid::from_u128(2)), 0x7893_66d9_04d1_dced);
        assert_ne!(key(Uuid::from_u128(1), Uuid::from_u128(2)), key(Uuid::from_u128(2), Uuid::from_u128(1)));
    }
}
