//! The transparency log of each stream: an RFC 6962 (RFC 9162 §2.1) Merkle tree over the stream's
//! events in sequence order, published as [C2SP tlog-tiles](https://c2sp.org/tlog-tiles) with a
//! [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint) signed with the receipt key, cosigned by
//! [C2SP tlog-witness](https://c2sp.org/tlog-witness) witnesses, and offline proofs in the
//! [C2SP tlog-proof](https://c2sp.org/tlog-proof) format.
//!
//! This module is the pure part: what an entry is, how tiles grow when entries are appended, which
//! tiles a proof needs, the checkpoint and the proof bundle. It does no I/O but for [`reader`], which
//! answers the log's reads (tiles, checkpoint, proofs) from `store::tlog`. The integrator and the
//! witness client, which write the log, are the leader's background duties (`worker::tlog`); the tree
//! and tile arithmetic is the `tlog_tiles` crate's.
//!
//! **Entry.** Entry `i` (zero-based) is the event with `sequence_number = i + 1`, as the compact JSON
//! of the object `GET /api/v1/ves/events` serves for it (`store::events::event_json`: the signed
//! envelope with every signed field byte-identical, plus `sequence_number` and `sequenced_at`), so
//! anyone holding the entries re-verifies every agent signature. tlog-tiles entry bundles prefix each
//! entry with a 16-bit length, so an event whose JSON is longer than 65,535 bytes is logged without
//! its `payload` member (its `payload_hash`, which the agent signed, stays): see [`entry_bytes`].
//! The leaf hash is RFC 6962's, `SHA-256(0x00 || entry)`.
//!
//! **Origin.** `<VES_CHECKPOINT_ORIGIN>/tlog/<tenant_id>/<store_id>`, signed under the key name
//! `VES_CHECKPOINT_ORIGIN` with the receipt key (the verifier key `GET /api/v1/ves/sequencer`
//! publishes). The `tlog` path element cannot be a UUID, so these checkpoints never share an origin
//! with the VES-commitment checkpoints (`<VES_CHECKPOINT_ORIGIN>/<tenant_id>/<store_id>`), whose root
//! is a state root rather than an RFC 6962 root.

pub mod bundle;
pub mod metrics;
pub mod public_read;
pub mod reader;
pub mod witness;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use tlog_tiles::{Hash, HashReader, Tile};

use crate::store::events::StreamKey;

/// Tile height of every tile (C2SP tlog-tiles fixes it at 8: 256 hashes or entries per full tile).
pub const TILE_HEIGHT: u8 = 8;
/// Hashes or entries in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
const HASH_BYTES: usize = tlog_tiles::HASH_SIZE;
/// The largest entry an entry bundle can hold (its length prefix is 16 bits).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// Errors of the pure log functions.
#[derive(Debug, thiserror::Error)]
pub enum TlogError {
    #[error("tlog: {0}")]
    Tree(#[from] tlog_tiles::Error),
    #[error("tlog: {0}")]
    Invalid(String),
}

impl From<TlogError> for crate::error::Error {
    fn from(e: TlogError) -> Self {
        crate::error::Error::Internal(e.to_string())
    }
}

/// The origin line of a stream's log checkpoints.
pub fn origin(key_name: &str, stream: StreamKey) -> String {
    format!("{key_name}/tlog/{}/{}", stream.tenant_id, stream.store_id)
}

/// The bytes of an entry: the compact JSON of the served event, without `payload` when the whole
/// would not fit a 16-bit length prefix.
pub fn entry_bytes(event: &serde_json::Value) -> Result<Vec<u8>, TlogError> {
    let bytes = serde_json::to_vec(event).map_err(|e| TlogError::Invalid(e.to_string()))?;
    if bytes.len() <= MAX_ENTRY_BYTES {
        return Ok(bytes);
    }
    let mut trimmed = event.clone();
    if let Some(map) = trimmed.as_object_mut() {
        map.remove("payload");
    }
    let bytes = serde_json::to_vec(&trimmed).map_err(|e| TlogError::Invalid(e.to_string()))?;
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(TlogError::Invalid(format!("entry of {} bytes even without its payload", bytes.len())));
    }
    Ok(bytes)
}

/// The entry of a stored event: [`entry_bytes`] of its served JSON, encoded without the `Value` when
/// it fits ([`crate::store::events::event_json_bytes`]).
pub fn entry_of(e: &crate::store::events::StoredEvent) -> crate::error::Result<Vec<u8>> {
    let bytes = crate::store::events::event_json_bytes(e)?;
    if bytes.len() <= MAX_ENTRY_BYTES {
        return Ok(bytes);
    }
    Ok(entry_bytes(&crate::store::events::event_json(e)?)?)
}

/// The leaf hash of the entry an event about to be stored as `row` will have (as [`entry_of`] will
/// encode it once stored), when it can be known before storing (`store::events::entry_before_storing`).
/// The sequencer computes it as it numbers the event, so that the integrator need not read the event
/// back (migration 0012).
pub fn leaf_before_storing(
    row: &crate::store::events::VesEventRow,
    sequenced_at: &str,
    scratch: &mut Vec<u8>,
) -> Option<[u8; 32]> {
    use crate::store::events::entry_before_storing;
    entry_before_storing(row, sequenced_at, false, scratch)?;
    if scratch.len() <= MAX_ENTRY_BYTES {
        return Some(leaf_hash(scratch).0);
    }
    entry_before_storing(row, sequenced_at, true, scratch)?;
    (scratch.len() <= MAX_ENTRY_BYTES).then(|| leaf_hash(scratch).0)
}

/// RFC 6962 leaf hash of an entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    tlog_tiles::record_hash(entry)
}

/// Appends one entry to an entry bundle (big-endian 16-bit length, then the bytes).
pub fn bundle_push(bundle: &mut Vec<u8>, entry: &[u8]) {
    let len = u16::try_from(entry.len()).expect("entries are at most MAX_ENTRY_BYTES");
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
}

/// The entries of an entry bundle, or `None` when it is malformed.
pub fn bundle_entries(bundle: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            return None;
        }
        out.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    Some(out)
}

/// The entry bundle of consecutive entries.
pub fn entry_bundle(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
    for e in entries {
        bundle_push(&mut b, e);
    }
    b
}

/// The first `width` entries of a bundle, as a bundle (a partial bundle of a smaller tree).
pub fn bundle_prefix(bundle: &[u8], width: usize) -> Option<&[u8]> {
    let mut end = 0;
    for _ in 0..width {
        let len = usize::from(u16::from_be_bytes([*bundle.get(end)?, *bundle.get(end + 1)?]));
        end += 2 + len;
        if end > bundle.len() {
            return None;
        }
    }
    Some(&bundle[..end])
}

/// A tile's address: level (`tlog_tiles` numbering, 0 = leaf hashes) and index within the level.
pub type TileKey = (u8, u64);

/// Hash tiles held in memory, read as the tree's stored hashes. A tile may be wider than a smaller
/// tree needs: the hashes of a tree never change once written, so a prefix serves every older size.
#[derive(Debug, Default, Clone)]
pub struct TileSet {
    pub tiles: HashMap<TileKey, Vec<u8>>,
}

impl HashReader for TileSet {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                let needed = Tile::from_index(TILE_HEIGHT, index);
                let data = self
                    .tiles
                    .get(&(needed.level(), needed.level_index()))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)?;
                let width = u32::try_from(data.len() / HASH_BYTES).map_err(|_| tlog_tiles::Error::InvalidTile)?;
                if width < needed.width() || width == 0 || u64::from(width) > TILE_WIDTH {
                    return Err(tlog_tiles::Error::IndexesNotInTree);
                }
                Tile::new(TILE_HEIGHT, needed.level(), needed.level_index(), width, false).hash_at_index(data, index)
            })
            .collect()
    }
}

/// Answers any stored-hash read with zeros and remembers which indexes were asked for: running a
/// `tlog_tiles` function over it tells which tiles its real run needs, so they are fetched at once.
#[derive(Default)]
struct IndexRecorder(RefCell<Vec<u64>>);

impl HashReader for IndexRecorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

fn tiles_of(recorder: IndexRecorder) -> Vec<TileKey> {
    let mut keys: Vec<TileKey> = recorder
        .0
        .into_inner()
        .into_iter()
        .map(|i| {
            let t = Tile::from_index(TILE_HEIGHT, i);
            (t.level(), t.level_index())
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The tiles the root of a tree of `size` entries is computed from.
pub fn tiles_for_root(size: u64) -> Vec<TileKey> {
    let r = IndexRecorder::default();
    let _ = tlog_tiles::tree_hash(size, &r);
    tiles_of(r)
}

/// The tiles an inclusion proof of entry `index` in a tree of `size` entries (and that tree's root) needs.
pub fn tiles_for_inclusion(size: u64, index: u64) -> Vec<TileKey> {
    let r = IndexRecorder::default();
    let _ = tlog_tiles::prove_record(size, index, &r);
    let _ = tlog_tiles::tree_hash(size, &r);
    tiles_of(r)
}

/// The tiles an inclusion proof of entry `index` in a tree of `size` entries needs, without its root.
pub fn tiles_for_record_proof(size: u64, index: u64) -> Vec<TileKey> {
    let r = IndexRecorder::default();
    let _ = tlog_tiles::prove_record(size, index, &r);
    tiles_of(r)
}

/// The tiles a consistency proof from `old` to `size` (and both roots) needs.
pub fn tiles_for_consistency(size: u64, old: u64) -> Vec<TileKey> {
    let r = IndexRecorder::default();
    if old >= 1 && old <= size {
        let _ = tlog_tiles::prove_tree(size, old, &r);
    }
    let _ = tlog_tiles::tree_hash(size, &r);
    let _ = tlog_tiles::tree_hash(old, &r);
    tiles_of(r)
}

/// The rightmost tile of each level of a tree of `size` entries that is partial (and so changes
/// when entries are appended), with its width.
pub fn edge_tiles(size: u64) -> Vec<(u8, u64, u32)> {
    let mut out = Vec::new();
    let mut level = 0u8;
    while size >> (u32::from(TILE_HEIGHT) * u32::from(level)) > 0 {
        let hashes = size >> (u32::from(TILE_HEIGHT) * u32::from(level));
        let width = (hashes % TILE_WIDTH) as u32;
        if width > 0 {
            out.push((level, hashes / TILE_WIDTH, width));
        }
        level += 1;
    }
    out
}

/// What appending entries to a tree changes.
#[derive(Debug, Default)]
pub struct Appended {
    pub size: u64,
    pub root: Hash,
    /// Hash tiles written (full ones once, partial ones again as they grow).
    pub tiles: BTreeMap<TileKey, Vec<u8>>,
}

/// Appends `entries` to a tree of `size` entries whose partial edge tiles (`edge_tiles(size)`) are
/// given, and returns every hash tile that changed and the new root.
///
/// Entry bundles are not stored: they are the events themselves, read back from the log (which is
/// append-only) and encoded on request by [`entry_bundle`]; storing them would write every event
/// twice more (once whole, then again each time its partial bundle grows).
pub fn append(size: u64, edge: &HashMap<TileKey, Vec<u8>>, entries: &[Vec<u8>]) -> Result<Appended, TlogError> {
    if let Some(entry) = entries.iter().find(|e| e.len() > MAX_ENTRY_BYTES) {
        return Err(TlogError::Invalid(format!("entry of {} bytes", entry.len())));
    }
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    append_leaves(size, edge, &leaves)
}

/// [`append`], given the entries' leaf hashes.
pub fn append_leaves(size: u64, edge: &HashMap<TileKey, Vec<u8>>, leaves: &[Hash]) -> Result<Appended, TlogError> {
    let mut levels: Vec<(u64, Vec<u8>)> = Vec::new();
    for level in 0u8.. {
        let shift = u32::from(TILE_HEIGHT) * u32::from(level);
        let after = size + leaves.len() as u64;
        if level > 0 && (after >> shift) == 0 {
            break;
        }
        let hashes = size >> shift;
        let (index, width) = (hashes / TILE_WIDTH, (hashes % TILE_WIDTH) as usize);
        let data = if width == 0 {
            Vec::new()
        } else {
            let data = edge
                .get(&(level, index))
                .ok_or_else(|| TlogError::Invalid(format!("missing edge tile {level}/{index} of size {size}")))?;
            if data.len() != width * HASH_BYTES {
                return Err(TlogError::Invalid(format!(
                    "edge tile {level}/{index} holds {} bytes, not {}",
                    data.len(),
                    width * HASH_BYTES
                )));
            }
            data.clone()
        };
        levels.push((index, data));
    }

    let mut out = Appended { size: size + leaves.len() as u64, ..Default::default() };
    let mut dirty = vec![false; levels.len() + 1];
    for leaf in leaves {
        let mut hash = *leaf;
        let mut level = 0usize;
        loop {
            if level == levels.len() {
                levels.push((0, Vec::new()));
                dirty.push(false);
            }
            let (index, data) = &mut levels[level];
            data.extend_from_slice(&hash.0);
            dirty[level] = true;
            if data.len() < TILE_WIDTH as usize * HASH_BYTES {
                break;
            }
            // A full tile: stored once; its subtree hash is the next hash of the level above.
            hash = Tile::subtree_hash(data);
            out.tiles.insert((level as u8, *index), std::mem::take(data));
            *index += 1;
            dirty[level] = false;
            level += 1;
        }
    }
    for (level, (index, data)) in levels.iter().enumerate() {
        if dirty[level] && !data.is_empty() {
            out.tiles.insert((level as u8, *index), data.clone());
        }
    }

    let mut view = TileSet::default();
    for (level, (index, data)) in levels.iter().enumerate() {
        if !data.is_empty() {
            view.tiles.insert((level as u8, *index), data.clone());
        }
    }
    for (key, data) in &out.tiles {
        view.tiles.entry(*key).or_insert_with(|| data.clone());
    }
    for key in tiles_for_root(out.size) {
        if !view.tiles.contains_key(&key)
            && let Some(data) = edge.get(&key)
        {
            view.tiles.insert(key, data.clone());
        }
    }
    out.root = tlog_tiles::tree_hash(out.size, &view)?;
    Ok(out)
}

/// A C2SP tile path under `.../tile/`: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRequest {
    /// `None` for an entry bundle.
    pub level: Option<u8>,
    pub index: u64,
    pub width: u32,
}

/// Parses the part of a tile URL after `tile/` (index encoded in `x`-prefixed groups of three digits).
pub fn parse_tile_path(path: &str) -> Option<TileRequest> {
    let (level, rest) = path.split_once('/')?;
    // NB: tlog_tiles parses the Go sumdb form `tile/<H>/<L|data>/<N>`; the C2SP form has no height.
    let level_part = if level == "entries" { "data".to_owned() } else { level.parse::<u8>().ok()?.to_string() };
    if level != "entries" && (level_part != level || level.parse::<u8>().ok()? >= 64) {
        return None;
    }
    // NB: tlog_tiles's parser lets a width of 0 through to an assertion; refuse it first.
    if rest.rsplit_once(".p/").is_some_and(|(_, w)| w.parse::<u32>().map_or(true, |w| w == 0)) {
        return None;
    }
    let tile = Tile::from_path(&format!("tile/{TILE_HEIGHT}/{level_part}/{rest}")).ok()?;
    if tile.width() == 0 {
        return None;
    }
    Some(TileRequest {
        level: (!tile.is_data()).then_some(tile.level()),
        index: tile.level_index(),
        width: tile.width(),
    })
}

/// The C2SP path (after `tile/`) of a tile.
pub fn tile_path(level: Option<u8>, index: u64, width: u32) -> String {
    let mut tile = Tile::new(TILE_HEIGHT, level.unwrap_or(0), index, width, false);
    if level.is_none() {
        tile.set_is_data();
    }
    let sumdb = tile.path();
    let rest = sumdb.strip_prefix(&format!("tile/{TILE_HEIGHT}/")).expect("tlog_tiles path");
    match rest.strip_prefix("data/") {
        Some(n) => format!("entries/{n}"),
        None => rest.to_owned(),
    }
}

/// The unsigned checkpoint text of a tree.
pub fn checkpoint_text(origin: &str, size: u64, root: Hash) -> Result<Vec<u8>, TlogError> {
    let cp = tlog_tiles::Checkpoint::new(origin, size, root, "").map_err(|e| TlogError::Invalid(e.to_string()))?;
    Ok(cp.to_bytes())
}

/// Signs a checkpoint text as a signed note.
pub fn sign_checkpoint(text: &[u8], signer: &dyn signed_note::Signer) -> Result<Vec<u8>, TlogError> {
    let mut note = signed_note::Note::new(text, &[]).map_err(|e| TlogError::Invalid(e.to_string()))?;
    note.add_sigs(&[signer]).map_err(|e| TlogError::Invalid(e.to_string()))?;
    Ok(note.to_bytes())
}

/// A witness as configured: its cosignature verifier key and its submission URL prefix.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WitnessConfig {
    /// The submission prefix; `add-checkpoint` is appended.
    pub url: String,
    /// The witness's verifier key, `<name>+<key id hex>+<base64(0x04 || Ed25519 public key)>`.
    pub key: String,
}

/// A URL as shown in status and logs: scheme and host only (a witness URL may carry credentials).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

/// The log's settings (`TLOG_*`).
#[derive(Debug, Clone)]
pub struct TlogConfig {
    /// `TLOG_ENABLED` (default true; needs `VES_SEQUENCER_SIGNING_KEY` to sign checkpoints).
    pub enabled: bool,
    /// `TLOG_INTEGRATE_INTERVAL_MS`: how often new events are integrated (default 200).
    pub integrate_interval: std::time::Duration,
    /// `TLOG_INTEGRATE_MAX_EVENTS`: the most events one stream integrates per transaction (default 4096).
    pub integrate_max_events: i64,
    /// `TLOG_WITNESSES`: JSON `[{"url": "...", "key": "<vkey>"}]`.
    pub witnesses: Vec<WitnessConfig>,
    /// `TLOG_WITNESS_INTERVAL_MS`: how often each stream's newest checkpoint goes to the witnesses (default 1000).
    pub witness_interval: std::time::Duration,
    /// `TLOG_WITNESS_TIMEOUT_MS`: per request (default 5000).
    pub witness_timeout: std::time::Duration,
    /// `TLOG_PUBLIC_READ`: streams whose log anyone may read without a credential (default none).
    pub public_read: public_read::PublicRead,
    /// `TLOG_PUBLIC_READ_RATE_PER_SECOND`: the requests without a credential that this process answers
    /// per second, all public streams and callers together (default 100, bursts of as many; 0: no limit).
    /// Past it, a 429 with `Retry-After`, except that a request with a credential is then answered as an
    /// authenticated read (charged to its tenant's limits).
    pub public_read_per_second: Option<std::num::NonZeroU32>,
}

impl Default for TlogConfig {
    fn default() -> Self {
        TlogConfig {
            enabled: true,
            integrate_interval: std::time::Duration::from_millis(200),
            integrate_max_events: 4096,
            witnesses: Vec::new(),
            witness_interval: std::time::Duration::from_millis(1000),
            witness_timeout: std::time::Duration::from_millis(5000),
            public_read: public_read::PublicRead::default(),
            public_read_per_second: std::num::NonZeroU32::new(100),
        }
    }
}

impl TlogConfig {
    /// Parses the `TLOG_*` variables through `get`; an error names the variable.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, (&'static str, String)> {
        let mut c = TlogConfig::default();
        let ms =
            |var: &'static str, default: std::time::Duration| -> Result<std::time::Duration, (&'static str, String)> {
                match get(var) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if n > 0 => Ok(std::time::Duration::from_millis(n)),
                        _ => Err((var, format!("{v:?} is not a positive number of milliseconds"))),
                    },
                }
            };
        if let Some(v) = get("TLOG_ENABLED") {
            c.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(("TLOG_ENABLED", format!("{v:?} is not true or false"))),
            };
        }
        c.integrate_interval = ms("TLOG_INTEGRATE_INTERVAL_MS", c.integrate_interval)?;
        c.witness_interval = ms("TLOG_WITNESS_INTERVAL_MS", c.witness_interval)?;
        c.witness_timeout = ms("TLOG_WITNESS_TIMEOUT_MS", c.witness_timeout)?;
        if let Some(v) = get("TLOG_INTEGRATE_MAX_EVENTS") {
            c.integrate_max_events = match v.trim().parse::<i64>() {
                Ok(n) if n > 0 => n,
                _ => return Err(("TLOG_INTEGRATE_MAX_EVENTS", format!("{v:?} is not a positive number"))),
            };
        }
        if let Some(v) = get("TLOG_WITNESSES") {
            let list: Vec<WitnessConfig> = serde_json::from_str(&v).map_err(|e| {
                ("TLOG_WITNESSES", format!("must be JSON [{{\"url\": \"https://...\", \"key\": \"<vkey>\"}}]: {e}"))
            })?;
            for w in &list {
                witness::CosignatureVerifier::new(&w.key)
                    .map_err(|e| ("TLOG_WITNESSES", format!("witness key {:?}: {e}", w.key)))?;
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    return Err(("TLOG_WITNESSES", format!("witness URL {:?} is not http(s)", w.url)));
                }
            }
            c.witnesses = list;
        }
        if let Some(v) = get("TLOG_PUBLIC_READ") {
            c.public_read = public_read::PublicRead::parse(&v).map_err(|e| ("TLOG_PUBLIC_READ", e))?;
        }
        if let Some(v) = get("TLOG_PUBLIC_READ_RATE_PER_SECOND") {
            c.public_read_per_second = match v.trim().parse::<u32>() {
                Ok(n) => std::num::NonZeroU32::new(n),
                Err(_) => {
                    return Err((
                        "TLOG_PUBLIC_READ_RATE_PER_SECOND",
                        format!("{v:?} is not a number of requests per second (0: no limit)"),
                    ));
                }
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
