//! The keydir: key → (segment, offset, value length, expiry), for every live key.
//!
//! Memory per key is what makes or breaks a Bitcask, so the layout is deliberate:
//!
//! - `Entry` is 48 bytes and keys of up to 22 bytes are stored inline in it (no allocation);
//!   longer keys live in a `Box<[u8]>`.
//! - Entries live in fixed-size chunks that never move (growth adds a chunk; nothing is
//!   copied), addressed by a dense u32 slot number. Freed slots form a free list.
//! - The hash index (`crate::slot_index`) holds only u32 slot numbers and one tag byte per
//!   bucket (5.3 bytes), in 64-byte chunks, so the load-factor slack of a hash table costs
//!   ~5 bytes per bucket instead of ~50, and a lookup touches one cache line of the index
//!   before the entry.
//! - Slots with an expiry are also listed in `ttl_slots`, so active expiry samples only keys
//!   that can expire (like Redis's `expires` dict), without a second copy of the key.
//!
//! Slot numbers are stable for the life of a key, so a scan cursor is simply a slot number:
//! a key present for a whole scan is returned exactly once.
use std::hash::BuildHasher;

use crate::slot_index::SlotIndex;

const CHUNK_BITS: u32 = 14;
const CHUNK: usize = 1 << CHUNK_BITS;
const INLINE: usize = 22;
const FREE: u32 = u32::MAX;
const NONE: u32 = u32::MAX;

/// Flag: this slot number is present in `ttl_slots` (kept across free/reuse so a slot is
/// listed at most once).
const F_IN_TTL_LIST: u32 = 1;

#[derive(Clone)]
enum KeyBytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    fn new(k: &[u8]) -> KeyBytes {
        if k.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..k.len()].copy_from_slice(k);
            KeyBytes::Inline {
                len: k.len() as u8,
                buf,
            }
        } else {
            KeyBytes::Heap(k.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, buf } => &buf[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }

    fn empty() -> KeyBytes {
        KeyBytes::Inline {
            len: 0,
            buf: [0u8; INLINE],
        }
    }
}

/// Where a key's newest value is, and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Segment slot id in the store's segment table.
    pub seg: u32,
    /// Offset of the record (its header) in the segment.
    pub off: u32,
    pub key_len: u32,
    pub val_len: u32,
    /// Absolute expiry in unix ms; 0 = none.
    pub expire: u64,
}

impl Location {
    /// Bytes the record occupies on disk.
    pub fn record_len(&self) -> u64 {
        crate::record::HEADER_LEN as u64 + self.key_len as u64 + self.val_len as u64
    }
}

struct Entry {
    key: KeyBytes,
    expire: u64,
    /// Segment id, or FREE for a free slot.
    seg: u32,
    /// Record offset, or the next free slot for a free slot.
    off: u32,
    val_len: u32,
    flags: u32,
}

fn entry_in(chunks: &[Vec<Entry>], slot: u32) -> &Entry {
    &chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
}

/// The hash of the key in a slot, for the index to move its slots when it grows or shrinks
/// (it keeps slot numbers only). Takes the fields, not the keydir, so that the index can be
/// borrowed mutably beside them.
fn slot_hasher<'a>(
    chunks: &'a [Vec<Entry>],
    hasher: &'a foldhash::quality::RandomState,
) -> impl Fn(u32) -> u64 + 'a {
    move |s| hasher.hash_one(entry_in(chunks, s).key.as_slice())
}

/// See the module documentation.
pub struct Keydir {
    chunks: Vec<Vec<Entry>>,
    index: SlotIndex,
    hasher: foldhash::quality::RandomState,
    free_head: u32,
    len: usize,
    /// Keys with an expiry.
    with_expiry: usize,
    ttl_slots: Vec<u32>,
    heap_key_bytes: usize,
}

impl Default for Keydir {
    fn default() -> Self {
        Self::new()
    }
}

impl Keydir {
    pub fn new() -> Keydir {
        Keydir {
            chunks: Vec::new(),
            index: SlotIndex::new(),
            hasher: foldhash::quality::RandomState::default(),
            free_head: NONE,
            len: 0,
            with_expiry: 0,
            ttl_slots: Vec::new(),
            heap_key_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest slot number ever used: the end of a scan.
    pub fn slot_end(&self) -> u32 {
        match self.chunks.last() {
            None => 0,
            Some(last) => ((self.chunks.len() - 1) * CHUNK + last.len()) as u32,
        }
    }

    /// Number of keys that have an expiry (an upper bound: stale list entries are pruned lazily).
    pub fn ttl_candidates(&self) -> usize {
        self.ttl_slots.len()
    }

    fn entry(&self, slot: u32) -> &Entry {
        entry_in(&self.chunks, slot)
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        &mut self.chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
    }

    /// The hash the index files `key` under (also what the prefetch stages take).
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find_slot(&self, key: &[u8]) -> Option<u32> {
        self.find_slot_hashed(key, self.hash(key))
    }

    fn find_slot_hashed(&self, key: &[u8], h: u64) -> Option<u32> {
        self.index.find(h, |s| self.entry(s).key.as_slice() == key)
    }

    /// Prefetch stage 1 of a batch of lookups: start loading each key's index chunk.
    pub fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Prefetch stage 2 (its index chunk loaded by stage 1): start loading the entries
    /// whose tag matches.
    pub fn prefetch_entries(&self, hash: u64) {
        self.index.candidates(hash, |s| {
            let e = self.entry(s) as *const Entry as *const u8;
            crate::slot_index::prefetch_line(e);
            // An entry (48 bytes) may straddle two lines.
            crate::slot_index::prefetch_line(e.wrapping_add(std::mem::size_of::<Entry>() - 1));
        });
    }

    /// `get` with the key's hash already known.
    pub fn get_hashed(&self, key: &[u8], hash: u64) -> Option<Location> {
        self.find_slot_hashed(key, hash)
            .map(|s| self.location_of(s))
    }

    fn location_of(&self, slot: u32) -> Location {
        let e = self.entry(slot);
        Location {
            seg: e.seg,
            off: e.off,
            key_len: e.key.as_slice().len() as u32,
            val_len: e.val_len,
            expire: e.expire,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Location> {
        self.find_slot(key).map(|s| self.location_of(s))
    }

    /// Inserts or replaces; returns the previous location.
    pub fn insert(&mut self, key: &[u8], loc: Location) -> Option<Location> {
        self.insert_hashed(key, self.hash(key), loc)
    }

    /// `insert` with the key's hash (`Keydir::hash`) already known.
    pub fn insert_hashed(&mut self, key: &[u8], h: u64, loc: Location) -> Option<Location> {
        if let Some(slot) = self.find_slot_hashed(key, h) {
            let prev = self.location_of(slot);
            self.count_expiry(prev.expire, loc.expire);
            let e = self.entry_mut(slot);
            e.seg = loc.seg;
            e.off = loc.off;
            e.val_len = loc.val_len;
            e.expire = loc.expire;
            if loc.expire != 0 {
                self.note_ttl(slot);
            }
            return Some(prev);
        }
        let slot = self.alloc(key, loc);
        self.count_expiry(0, loc.expire);
        let Keydir {
            index,
            chunks,
            hasher,
            ..
        } = self;
        index.insert_unique(h, slot, slot_hasher(chunks, hasher));
        if loc.expire != 0 {
            self.note_ttl(slot);
        }
        None
    }

    fn alloc(&mut self, key: &[u8], loc: Location) -> u32 {
        let entry = Entry {
            key: KeyBytes::new(key),
            expire: loc.expire,
            seg: loc.seg,
            off: loc.off,
            val_len: loc.val_len,
            flags: 0,
        };
        if key.len() > INLINE {
            self.heap_key_bytes += key.len();
        }
        self.len += 1;
        if self.free_head != NONE {
            let slot = self.free_head;
            let e = self.entry_mut(slot);
            let next = e.off;
            let flags = e.flags;
            *e = Entry { flags, ..entry };
            self.free_head = next;
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let n = self.chunks.len();
        let last = &mut self.chunks[n - 1];
        last.push(entry);
        ((n - 1) * CHUNK + last.len() - 1) as u32
    }

    /// Removes a key; returns its location.
    pub fn remove(&mut self, key: &[u8]) -> Option<Location> {
        let h = self.hash(key);
        let Keydir { index, chunks, .. } = self;
        let slot = index.remove(h, |s| entry_in(chunks, s).key.as_slice() == key)?;
        let loc = self.location_of(slot);
        self.count_expiry(loc.expire, 0);
        if key.len() > INLINE {
            self.heap_key_bytes -= key.len();
        }
        let free_head = self.free_head;
        let e = self.entry_mut(slot);
        e.key = KeyBytes::empty();
        e.seg = FREE;
        e.off = free_head;
        e.expire = 0;
        e.val_len = 0;
        self.free_head = slot;
        self.len -= 1;
        Some(loc)
    }

    /// Changes only the expiry; returns false when the key is absent.
    pub fn set_expire(&mut self, key: &[u8], expire: u64) -> bool {
        let Some(slot) = self.find_slot(key) else {
            return false;
        };
        let before = self.entry(slot).expire;
        self.count_expiry(before, expire);
        self.entry_mut(slot).expire = expire;
        if expire != 0 {
            self.note_ttl(slot);
        }
        true
    }

    fn count_expiry(&mut self, before: u64, after: u64) {
        match (before != 0, after != 0) {
            (false, true) => self.with_expiry += 1,
            (true, false) => self.with_expiry -= 1,
            _ => {}
        }
    }

    /// Keys that have an expiry (exact; INFO keyspace `expires=`).
    pub fn with_expiry(&self) -> usize {
        self.with_expiry
    }

    /// Moves a key to a new location only if it is still at `expected` (used when installing
    /// merge output: a key written again since the merge started keeps its newer location).
    pub fn repoint_if(
        &mut self,
        key: &[u8],
        expected_seg: u32,
        expected_off: u32,
        seg: u32,
        off: u32,
    ) -> bool {
        let Some(slot) = self.find_slot(key) else {
            return false;
        };
        let e = self.entry_mut(slot);
        if e.seg == expected_seg && e.off == expected_off {
            e.seg = seg;
            e.off = off;
            true
        } else {
            false
        }
    }

    fn note_ttl(&mut self, slot: u32) {
        let e = self.entry_mut(slot);
        if e.flags & F_IN_TTL_LIST == 0 {
            e.flags |= F_IN_TTL_LIST;
            self.ttl_slots.push(slot);
        }
    }

    /// Samples up to `samples` keys that have an expiry and returns those expired at `now`
    /// (Redis's active-expiry sampling). Stale list entries met on the way are pruned.
    pub fn sample_expired(&mut self, samples: usize, now: u64, out: &mut Vec<Vec<u8>>) -> usize {
        let mut looked = 0;
        while looked < samples && !self.ttl_slots.is_empty() {
            looked += 1;
            let i = fastrand::usize(..self.ttl_slots.len());
            let slot = self.ttl_slots[i];
            let e = self.entry(slot);
            if e.seg == FREE || e.expire == 0 {
                self.ttl_slots.swap_remove(i);
                self.entry_mut(slot).flags &= !F_IN_TTL_LIST;
                continue;
            }
            if e.expire <= now {
                out.push(e.key.as_slice().to_vec());
            }
        }
        looked
    }

    /// Visits occupied slots from `cursor`, calling `f(key, location)` for up to `count` of
    /// them; returns the next cursor (0 when done).
    pub fn scan(&self, cursor: u32, count: usize, mut f: impl FnMut(&[u8], Location)) -> u32 {
        let end = self.slot_end();
        let mut slot = cursor;
        let mut seen = 0;
        // Visiting empty slots is bounded too, so a sparse keydir cannot stall the caller.
        let mut budget = count.saturating_mul(10).max(100);
        while slot < end && seen < count && budget > 0 {
            let e = self.entry(slot);
            if e.seg != FREE {
                f(e.key.as_slice(), self.location_of(slot));
                seen += 1;
            }
            slot += 1;
            budget -= 1;
        }
        if slot >= end { 0 } else { slot }
    }

    /// A uniformly random key (by slot), or None when empty.
    pub fn random_key(&self) -> Option<Vec<u8>> {
        if self.len == 0 {
            return None;
        }
        let end = self.slot_end();
        for _ in 0..64 {
            let slot = fastrand::u32(..end);
            let e = self.entry(slot);
            if e.seg != FREE {
                return Some(e.key.as_slice().to_vec());
            }
        }
        // Very sparse: walk from a random point.
        let start = fastrand::u32(..end);
        (start..end)
            .chain(0..start)
            .find(|&s| self.entry(s).seg != FREE)
            .map(|s| self.entry(s).key.as_slice().to_vec())
    }

    /// The first key, walking the slots from a random one (and around), that `keep` takes.
    pub fn find_from_random(&self, mut keep: impl FnMut(Location) -> bool) -> Option<Vec<u8>> {
        if self.len == 0 {
            return None;
        }
        let end = self.slot_end();
        let start = fastrand::u32(..end);
        (start..end)
            .chain(0..start)
            .find(|&s| self.entry(s).seg != FREE && keep(self.location_of(s)))
            .map(|s| self.entry(s).key.as_slice().to_vec())
    }

    /// Iterates over all live entries (recovery checks, merges, tests).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Location)) {
        for slot in 0..self.slot_end() {
            let e = self.entry(slot);
            if e.seg != FREE {
                f(e.key.as_slice(), self.location_of(slot));
            }
        }
    }

    /// Bytes one key of `key_len` bytes takes here (MEMORY USAGE): its entry, its share of
    /// the hash index, its place in the expiry list if it has an expiry, and the heap copy
    /// of a key too long to be stored inline.
    pub fn key_memory(&self, key_len: usize, has_expiry: bool) -> usize {
        let index_share = self.index.memory_bytes().div_ceil(self.len.max(1));
        std::mem::size_of::<Entry>()
            + index_share
            + if has_expiry { 4 } else { 0 }
            + if key_len > INLINE { key_len } else { 0 }
    }

    /// Heap bytes held, for INFO memory and the bytes-per-key measurement.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Entry>()
            + self.index.memory_bytes()
            + self.ttl_slots.capacity() * 4
            + self.heap_key_bytes
    }

    pub fn clear(&mut self) {
        *self = Keydir {
            hasher: self.hasher.clone(),
            ..Keydir::new()
        };
    }

    /// Gives back index room a generous [`Keydir::reserve`] left unused (recovery reserves one
    /// slot per record; a log of overwrites holds far fewer keys).
    pub fn shrink_if_oversized(&mut self) {
        if self.index.capacity() <= 2 * self.len.max(1024) {
            return;
        }
        let Keydir {
            index,
            chunks,
            hasher,
            ..
        } = self;
        index.shrink_to_fit(slot_hasher(chunks, hasher));
    }

    /// Pre-sizes the index (recovery knows roughly how many keys are coming).
    pub fn reserve(&mut self, additional: usize) {
        let Keydir {
            index,
            chunks,
            hasher,
            ..
        } = self;
        index.reserve(additional, slot_hasher(chunks, hasher));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(seg: u32, off: u32, expire: u64) -> Location {
        Location {
            seg,
            off,
            key_len: 0,
            val_len: 10,
            expire,
        }
    }

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn insert_get_replace_remove_with_inline_and_heap_keys() {
        let mut kd = Keydir::new();
        let long = vec![b'x'; 100];
        assert!(kd.insert(b"short", loc(1, 64, 0)).is_none());
        assert!(kd.insert(&long, loc(1, 128, 0)).is_none());
        assert_eq!(kd.get(b"short").unwrap().off, 64);
        assert_eq!(kd.get(&long).unwrap().key_len, 100);
        let prev = kd.insert(b"short", loc(2, 10, 5)).unwrap();
        assert_eq!((prev.seg, prev.off), (1, 64));
        assert_eq!(kd.get(b"short").unwrap().expire, 5);
        assert_eq!(kd.len(), 2);
        assert_eq!(kd.remove(&long).unwrap().off, 128);
        assert!(kd.get(&long).is_none());
        assert_eq!(kd.len(), 1);
        // The freed slot is reused.
        kd.insert(b"again", loc(3, 1, 0));
        assert_eq!(kd.slot_end(), 2);
    }

    #[test]
    fn scan_returns_each_key_once_across_cursors() {
        let mut kd = Keydir::new();
        for i in 0..1000u32 {
            kd.insert(format!("k{i}").as_bytes(), loc(0, i, 0));
        }
        for i in (0..1000u32).step_by(3) {
            kd.remove(format!("k{i}").as_bytes());
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = 0;
        loop {
            cursor = kd.scan(cursor, 7, |k, _| assert!(seen.insert(k.to_vec())));
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), kd.len());
    }

    #[test]
    fn sampling_finds_expired_keys_and_prunes_keys_without_expiry() {
        let mut kd = Keydir::new();
        kd.insert(b"a", loc(0, 0, 100));
        kd.insert(b"b", loc(0, 1, 200));
        kd.insert(b"c", loc(0, 2, 0));
        kd.set_expire(b"b", 0);
        let mut out = Vec::new();
        kd.sample_expired(100, 150, &mut out);
        assert!(out.iter().all(|k| k == b"a"));
        assert!(!out.is_empty());
        assert_eq!(kd.ttl_candidates(), 1, "b lost its expiry and was pruned");
    }

    #[test]
    fn keys_with_an_expiry_are_counted_exactly() {
        let mut kd = Keydir::new();
        kd.insert(b"a", loc(0, 0, 100));
        kd.insert(b"b", loc(0, 1, 0));
        kd.insert(b"a", loc(0, 2, 200));
        assert_eq!(kd.with_expiry(), 1);
        kd.set_expire(b"b", 50);
        assert_eq!(kd.with_expiry(), 2);
        kd.set_expire(b"a", 0);
        kd.insert(b"b", loc(0, 3, 0));
        assert_eq!(kd.with_expiry(), 0);
        kd.insert(b"c", loc(0, 4, 9));
        kd.remove(b"c");
        assert_eq!(kd.with_expiry(), 0);
        kd.insert(b"d", loc(0, 5, 9));
        kd.clear();
        assert_eq!(kd.with_expiry(), 0);
    }

    #[test]
    fn repoint_only_moves_keys_still_at_the_expected_place() {
        let mut kd = Keydir::new();
        kd.insert(b"a", loc(1, 10, 0));
        kd.insert(b"b", loc(1, 20, 0));
        kd.insert(b"b", loc(5, 0, 0));
        assert!(kd.repoint_if(b"a", 1, 10, 9, 64));
        assert!(!kd.repoint_if(b"b", 1, 20, 9, 100));
        assert_eq!(
            (kd.get(b"a").unwrap().seg, kd.get(b"a").unwrap().off),
            (9, 64)
        );
        assert_eq!(kd.get(b"b").unwrap().seg, 5);
    }
}
