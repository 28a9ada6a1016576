//! The keydir's hash index: key hash → slot number, in cache-line chunks.
//!
//! A lookup in a general-purpose swiss table touches three cache lines before it reaches the
//! key: the control bytes, the bucket array (kept apart from them) and the entry. Here each
//! 64-byte chunk holds 12 one-byte tags and the 12 slot numbers they belong to, so a lookup
//! touches one line of the index and then the entry: one cache miss fewer on every GET, SET
//! and DEL of a keydir larger than the CPU caches. 5.3 bytes per bucket, at most 7/8 of the
//! buckets used: 6.1 to 12.2 bytes per key, against 5.7 to 11.4 for the swiss table it
//! replaced.
//!
//! Collisions move a key to the next chunk (linear probing over chunks). Each chunk counts
//! the keys that passed over it while it was full (`overflow`, as in F14): a lookup stops at
//! the first chunk without the key whose count is 0, and a removal decrements the counts on
//! its key's path, so deletions leave no tombstones and lookups stay short. A count that
//! reaches 255 stays there (lookups then only probe further than needed).
//!
//! The index stores no hashes: growing recomputes them from the keys (`rehash`).

/// Slots per chunk: 12 tags + overflow + padding = 16 bytes, then 12 × 4-byte slots.
const SLOTS: usize = 12;
const TAG_MASK: u16 = (1 << SLOTS) - 1;
const EMPTY: u8 = 0;
/// At most 7 of every 8 buckets are used (F14 fills 12 of 14).
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk {
    tags: [u8; SLOTS],
    overflow: u8,
    _pad: [u8; 3],
    slots: [u32; SLOTS],
}

const EMPTY_CHUNK: Chunk = Chunk {
    tags: [EMPTY; SLOTS],
    overflow: 0,
    _pad: [0; 3],
    slots: [0; SLOTS],
};

impl Chunk {
    /// Bit i set when tag i equals `tag`.
    #[inline]
    fn matches(&self, tag: u8) -> u16 {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{
                __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
            };
            // SAFETY: SSE2 is part of the x86_64 baseline; the 16 bytes read are `tags`,
            // `overflow` and `_pad`, all inside the chunk (repr(C)).
            unsafe {
                let group = _mm_loadu_si128(self as *const Chunk as *const __m128i);
                let eq = _mm_cmpeq_epi8(group, _mm_set1_epi8(tag as i8));
                (_mm_movemask_epi8(eq) as u16) & TAG_MASK
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut m = 0u16;
            for (i, &t) in self.tags.iter().enumerate() {
                if t == tag {
                    m |= 1 << i;
                }
            }
            m
        }
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: no effect on results, and
/// no fault whatever the address).
#[inline]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; it does not dereference `p`.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Tag byte of a hash: its top 7 bits with the high bit set, so that it is never EMPTY.
/// The chunk comes from the low bits, so tag and position are independent.
#[inline]
fn tag_of(hash: u64) -> u8 {
    ((hash >> 57) as u8) | 0x80
}

pub(crate) struct SlotIndex {
    chunks: Vec<Chunk>,
    /// chunks.len() - 1 (a power of two minus one); 0 when empty.
    mask: usize,
    len: usize,
}

impl SlotIndex {
    pub(crate) fn new() -> SlotIndex {
        SlotIndex {
            chunks: Vec::new(),
            mask: 0,
            len: 0,
        }
    }

    /// Buckets (12 per chunk).
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.len() * SLOTS
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    fn max_len(&self) -> usize {
        self.capacity() * LOAD_NUM / LOAD_DEN
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// The slot whose key hashes to `hash` and for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.locate(hash, &mut eq)
            .map(|(i, j)| self.chunks[i].slots[j])
    }

    /// Starts loading the chunk a lookup of `hash` reads first.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(c) = self.chunks.get(self.home(hash)) {
            prefetch_line(c as *const Chunk as *const u8);
        }
    }

    /// Calls `f` with every slot of the home chunk whose tag matches `hash` (the candidates
    /// a lookup would compare first).
    #[inline]
    pub(crate) fn candidates(&self, hash: u64, mut f: impl FnMut(u32)) {
        if let Some(c) = self.chunks.get(self.home(hash)) {
            let mut m = c.matches(tag_of(hash));
            while m != 0 {
                f(c.slots[m.trailing_zeros() as usize]);
                m &= m - 1;
            }
        }
    }

    /// (chunk, position) of the matching slot.
    #[inline]
    fn locate(&self, hash: u64, eq: &mut impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        if self.chunks.is_empty() {
            return None;
        }
        let tag = tag_of(hash);
        let mut i = self.home(hash);
        // Bounded: the table is never full, so some chunk on any path has overflow 0 unless
        // counts saturated; the bound keeps even that case finite.
        for _ in 0..self.chunks.len() {
            let c = &self.chunks[i];
            let mut m = c.matches(tag);
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                if eq(c.slots[j]) {
                    return Some((i, j));
                }
                m &= m - 1;
            }
            if c.overflow == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Adds `slot` (whose key is not in the index) under `hash`. `rehash` gives the hash of
    /// any slot already in, for growing.
    pub(crate) fn insert_unique(&mut self, hash: u64, slot: u32, rehash: impl Fn(u32) -> u64) {
        if self.len + 1 > self.max_len() {
            let chunks = (self.chunks.len() * 2).max(1);
            self.rebuild(chunks, &rehash);
        }
        self.place(hash, slot);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let tag = tag_of(hash);
        let mut i = self.home(hash);
        loop {
            let c = &mut self.chunks[i];
            let free = c.matches(EMPTY);
            if free != 0 {
                let j = free.trailing_zeros() as usize;
                c.tags[j] = tag;
                c.slots[j] = slot;
                return;
            }
            c.overflow = c.overflow.saturating_add(1);
            i = (i + 1) & self.mask;
        }
    }

    /// Removes the slot matching `eq` under `hash`; returns it.
    pub(crate) fn remove(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (i, j) = self.locate(hash, &mut eq)?;
        let slot = self.chunks[i].slots[j];
        self.chunks[i].tags[j] = EMPTY;
        // Undo the counts its insertion added on the way from its home chunk.
        let mut k = self.home(hash);
        while k != i {
            let c = &mut self.chunks[k];
            if c.overflow != u8::MAX {
                c.overflow -= 1;
            }
            k = (k + 1) & self.mask;
        }
        self.len -= 1;
        Some(slot)
    }

    /// Room for `additional` more slots without growing.
    pub(crate) fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        let want = self.len.saturating_add(additional);
        if want > self.max_len() {
            self.rebuild(Self::chunks_for(want), &rehash);
        }
    }

    /// Shrinks to the smallest size that holds the current slots.
    pub(crate) fn shrink_to_fit(&mut self, rehash: impl Fn(u32) -> u64) {
        let chunks = Self::chunks_for(self.len);
        if chunks < self.chunks.len() {
            self.rebuild(chunks, &rehash);
        }
    }

    /// Chunks (a power of two) for `n` slots at the maximum load.
    fn chunks_for(n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let buckets = n.saturating_mul(LOAD_DEN).div_ceil(LOAD_NUM);
        buckets.div_ceil(SLOTS).next_power_of_two()
    }

    fn rebuild(&mut self, chunks: usize, rehash: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.chunks, vec![EMPTY_CHUNK; chunks]);
        self.mask = chunks.saturating_sub(1);
        for c in &old {
            let mut m = !c.matches(EMPTY) & TAG_MASK;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                let slot = c.slots[j];
                self.place(rehash(slot), slot);
                m &= m - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_chunk_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Chunk>(), 64);
        assert_eq!(std::mem::align_of::<Chunk>(), 64);
    }

    /// Keys are slot numbers; `hash` decides where they go, badly on purpose in the tests
    /// below so that chunks overflow and tags collide.
    fn check_against_model(ops: &[(bool, u32)], hash: impl Fn(u32) -> u64) {
        let mut idx = SlotIndex::new();
        let mut model: HashMap<u32, ()> = HashMap::new();
        for &(insert, k) in ops {
            if insert {
                if model.insert(k, ()).is_none() {
                    idx.insert_unique(hash(k), k, &hash);
                }
            } else {
                let removed = idx.remove(hash(k), |s| s == k);
                assert_eq!(removed.is_some(), model.remove(&k).is_some(), "remove {k}");
            }
            assert_eq!(idx.len, model.len());
            assert!(idx.len <= idx.max_len());
        }
        for k in 0..64u32 {
            let found = idx.find(hash(k), |s| s == k);
            assert_eq!(found.is_some(), model.contains_key(&k), "find {k}");
        }
        // Every path is clean again once everything is removed: no count is left behind.
        for k in model.keys() {
            idx.remove(hash(*k), |s| s == *k).unwrap();
        }
        assert!(
            idx.chunks
                .iter()
                .all(|c| c.overflow == 0 && c.matches(EMPTY) == TAG_MASK)
        );
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_with_a_good_hash(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..400)) {
            check_against_model(&ops, |k| (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }

        #[test]
        fn behaves_like_a_set_when_every_key_shares_a_home_and_a_tag(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..400)) {
            // Every key in chunk 0 (or 1 of 2 homes) with the same tag: long overflow chains.
            check_against_model(&ops, |k| (k % 2) as u64);
        }
    }

    #[test]
    fn reserve_and_shrink_keep_every_slot() {
        let hash = |k: u32| (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut idx = SlotIndex::new();
        idx.reserve(100_000, hash);
        let reserved = idx.capacity();
        assert!(reserved * LOAD_NUM / LOAD_DEN >= 100_000);
        for k in 0..1000 {
            idx.insert_unique(hash(k), k, hash);
        }
        assert_eq!(idx.capacity(), reserved, "no growth within the reservation");
        idx.shrink_to_fit(hash);
        assert!(idx.capacity() < reserved);
        for k in 0..1000 {
            assert_eq!(idx.find(hash(k), |s| s == k), Some(k));
        }
        assert_eq!(idx.find(hash(5000), |s| s == 5000), None);
    }
}
