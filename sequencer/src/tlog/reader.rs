//! Reads of a stream's log: tiles, the checkpoint with its cosignatures, inclusion and consistency
//! proofs at any tree size up to the integrated one, and proof bundles. Every proof is computed by
//! `tlog_tiles` from the stored tiles (at most one tile per level, fetched in one round trip).

use tlog_tiles::{Hash, HashReader};

use super::{TILE_WIDTH, TileKey, TileRequest, TileSet};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::events::StreamKey;
use crate::store::tlog::TreeHead;

/// An inclusion proof of one entry in the tree of `tree_size` entries.
#[derive(Debug, Clone)]
pub struct Inclusion {
    pub index: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub root: Hash,
    pub proof: Vec<Hash>,
}

/// A consistency proof between two tree sizes (RFC 9162 §2.1.4).
#[derive(Debug, Clone)]
pub struct Consistency {
    pub from_size: u64,
    pub to_size: u64,
    pub from_root: Hash,
    pub to_root: Hash,
    pub proof: Vec<Hash>,
}

async fn head(store: &Store, stream: StreamKey) -> Result<TreeHead> {
    store
        .tlog_head(stream)
        .await?
        .ok_or_else(|| Error::NotFound("this stream has no transparency log yet (no event integrated)".into()))
}

fn tree_err(e: tlog_tiles::Error) -> Error {
    Error::Internal(format!("transparency log tiles: {e}"))
}

/// A stream's hash tiles by key, as the pure code reads them.
pub async fn hash_tiles(store: &Store, stream: StreamKey, keys: &[TileKey]) -> Result<TileSet> {
    let wanted: Vec<(i16, i64)> = keys.iter().map(|&(l, n)| (i16::from(l), n as i64)).collect();
    let tiles = store.tlog_tiles(stream, &wanted).await?;
    Ok(TileSet { tiles: tiles.into_iter().map(|((l, n), d)| ((l as u8, n as u64), d)).collect() })
}

/// A tile's bytes, or `None` when it is not part of the integrated tree.
pub async fn tile(store: &Store, stream: StreamKey, t: TileRequest) -> Result<Option<Vec<u8>>> {
    if let Some(level) = t.level
        && u64::from(t.width) == TILE_WIDTH
        && let Some(data) = store.tlog_cached_full_tile(stream, i16::from(level), t.index as i64)
    {
        return Ok(Some(data.to_vec()));
    }
    let Some(head) = store.tlog_head(stream).await? else { return Ok(None) };
    let size = head.size as u64;
    let available = match t.level {
        Some(l) => size.checked_shr(u32::from(l) * 8).unwrap_or(0),
        None => size,
    };
    let end = t.index.checked_mul(TILE_WIDTH).and_then(|s| s.checked_add(u64::from(t.width)));
    if end.is_none_or(|end| end > available) {
        return Ok(None);
    }
    match t.level {
        Some(level) => {
            let Some((_, data)) = store.tlog_tile(stream, i16::from(level), t.index as i64).await? else {
                return Ok(None);
            };
            Ok(data.get(..t.width as usize * 32).map(<[u8]>::to_vec))
        }
        None => Ok(Some(super::entry_bundle(&entries(store, stream, t.index * TILE_WIDTH, t.width as u64).await?))),
    }
}

/// Entries `first..first + count` (zero-based), from the log itself.
pub async fn entries(store: &Store, stream: StreamKey, first: u64, count: u64) -> Result<Vec<Vec<u8>>> {
    let head = store.head(stream).await?;
    let events = store.read_range(stream, first as i64 + 1, count as i64, head).await?;
    if events.len() as u64 != count {
        return Err(Error::Internal(format!("entries {first}..+{count}: the log holds fewer events")));
    }
    events.iter().map(super::entry_of).collect()
}

/// The newest checkpoint, with the cosignatures witnesses returned for it.
pub async fn checkpoint(store: &Store, stream: StreamKey) -> Result<Vec<u8>> {
    let head = head(store, stream).await?;
    let mut note = head.checkpoint;
    for line in store.tlog_cosignatures(stream, head.size).await? {
        note.extend_from_slice(line.as_bytes());
    }
    Ok(note)
}

/// The zero-based index of the entry a request names.
pub async fn resolve_index(
    store: &Store,
    stream: StreamKey,
    sequence_number: Option<i64>,
    event_id: Option<uuid::Uuid>,
    leaf_hash: Option<&str>,
) -> Result<u64> {
    match (sequence_number, event_id, leaf_hash) {
        (Some(n), None, None) if n >= 1 => Ok(n as u64 - 1),
        (Some(_), None, None) => Err(Error::BadRequest("sequence_number must be at least 1".into())),
        (None, Some(id), None) => match store.tlog_sequence_of_event(stream, id).await? {
            Some(n) => Ok(n as u64 - 1),
            None => Err(Error::NotFound(format!("no event {id} in this stream"))),
        },
        (None, None, Some(h)) => {
            let leaf = parse_hash(h)
                .ok_or_else(|| Error::BadRequest("leaf_hash must be 32 bytes as base64 or (0x-prefixed) hex".into()))?;
            match store.tlog_find_leaf(stream, &leaf.0).await? {
                Some((tile, i)) => Ok(tile * TILE_WIDTH + i),
                None => Err(Error::NotFound("no integrated entry has this leaf hash".into())),
            }
        }
        _ => Err(Error::BadRequest("give exactly one of sequence_number, event_id, leaf_hash".into())),
    }
}

/// A hash as base64 (the tlog convention) or hex.
pub fn parse_hash(s: &str) -> Option<Hash> {
    use base64::Engine;
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    let raw = if hex_part.len() == 64 {
        hex::decode(hex_part).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(s).ok()?
    };
    Some(Hash(raw.try_into().ok()?))
}

fn checked_size(head: &TreeHead, wanted: Option<u64>) -> Result<u64> {
    let size = head.size as u64;
    match wanted {
        None => Ok(size),
        Some(w) if w <= size => Ok(w),
        Some(w) => Err(Error::BadRequest(format!("tree_size {w} is beyond the integrated tree ({size} entries)"))),
    }
}

/// The root of the tree of `size` entries: the signed head's when it is that tree (no hashing up the
/// right edge's partial tiles), else computed from the tiles.
fn root_at(head: &TreeHead, size: u64, tiles: &TileSet) -> Result<Hash> {
    if size == head.size as u64
        && let Ok(root) = <[u8; 32]>::try_from(head.root.as_slice())
    {
        return Ok(Hash(root));
    }
    tlog_tiles::tree_hash(size, tiles).map_err(tree_err)
}

/// Inclusion proof of entry `index` in the tree of `tree_size` entries (default: the integrated one).
pub async fn inclusion(store: &Store, stream: StreamKey, index: u64, tree_size: Option<u64>) -> Result<Inclusion> {
    let head = head(store, stream).await?;
    let size = checked_size(&head, tree_size)?;
    if index >= size {
        return Err(Error::BadRequest(format!("entry {index} is not in a tree of {size} entries")));
    }
    let mut keys = if size == head.size as u64 {
        super::tiles_for_record_proof(size, index)
    } else {
        super::tiles_for_inclusion(size, index)
    };
    keys.push((0, index / TILE_WIDTH));
    let tiles = hash_tiles(store, stream, &keys).await?;
    let proof = tlog_tiles::prove_record(size, index, &tiles).map_err(tree_err)?;
    let root = root_at(&head, size, &tiles)?;
    let leaf_hash = tiles.read_hashes(&[tlog_tiles::stored_hash_index(0, index)]).map_err(tree_err)?[0];
    Ok(Inclusion { index, tree_size: size, leaf_hash, root, proof })
}

/// Consistency proof from `from` to `to` entries (default: the integrated tree).
pub async fn consistency(store: &Store, stream: StreamKey, from: u64, to: Option<u64>) -> Result<Consistency> {
    let head = head(store, stream).await?;
    let to = checked_size(&head, to)?;
    if from > to {
        return Err(Error::BadRequest(format!("from_size {from} is larger than to_size {to}")));
    }
    let tiles = hash_tiles(store, stream, &super::tiles_for_consistency(to, from)).await?;
    let proof = if from == 0 { Vec::new() } else { tlog_tiles::prove_tree(to, from, &tiles).map_err(tree_err)? };
    Ok(Consistency {
        from_size: from,
        to_size: to,
        from_root: root_at(&head, from, &tiles)?,
        to_root: root_at(&head, to, &tiles)?,
        proof,
    })
}

/// A C2SP tlog-proof bundle for entry `index`, against the newest checkpoint a witness cosigned
/// that covers it, or else the newest checkpoint.
pub async fn bundle(store: &Store, stream: StreamKey, index: u64) -> Result<Vec<u8>> {
    let head = head(store, stream).await?;
    if index >= head.size as u64 {
        return Err(Error::NotFound(format!(
            "entry {index} is not integrated yet (the log holds {} entries); retry after the integration interval",
            head.size
        )));
    }
    let (size, mut note) = match store.tlog_newest_cosigned(stream, index as i64).await? {
        Some((size, note)) if size <= head.size => (size, note),
        _ => (head.size, head.checkpoint),
    };
    for line in store.tlog_cosignatures(stream, size).await? {
        note.extend_from_slice(line.as_bytes());
    }
    let size = size as u64;
    let tiles = hash_tiles(store, stream, &super::tiles_for_inclusion(size, index)).await?;
    let proof = tlog_tiles::prove_record(size, index, &tiles).map_err(tree_err)?;
    let entry = entries(store, stream, index, 1).await?.remove(0);
    Ok(super::bundle::format(&entry, index, &proof, &note))
}
