//! Redis Cluster key slots: CRC16-XMODEM of the key (or of its hash tag) modulo 16384.

/// Number of hash slots in a cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM (polynomial 0x1021, init 0, no reflection), the variant Redis Cluster uses.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Slicing-by-8 tables: `SLICE8[k][x]` is the CRC of byte `x` followed by `k` zero bytes.
/// The CRC is linear over XOR and its state is 16 bits, so eight bytes at once are
/// `SLICE8[7][hi ^ b0] ^ SLICE8[6][lo ^ b1] ^ SLICE8[5][b2] ^ ... ^ SLICE8[0][b7]`: eight
/// independent lookups instead of a chain of eight dependent ones. Every key is hashed at
/// least once per command, so this is on the hot path.
const SLICE8: [[u16; 256]; 8] = {
    let mut t = [[0u16; 256]; 8];
    t[0] = CRC16_TABLE;
    let mut k = 1;
    while k < 8 {
        let mut x = 0;
        while x < 256 {
            // One more zero byte after `t[k - 1][x]`.
            let c = t[k - 1][x];
            t[k][x] = (c << 8) ^ CRC16_TABLE[(c >> 8) as usize];
            x += 1;
        }
        k += 1;
    }
    t
};

/// CRC16-XMODEM of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        crc = SLICE8[7][usize::from(hi ^ c[0])]
            ^ SLICE8[6][usize::from(lo ^ c[1])]
            ^ SLICE8[5][usize::from(c[2])]
            ^ SLICE8[4][usize::from(c[3])]
            ^ SLICE8[3][usize::from(c[4])]
            ^ SLICE8[2][usize::from(c[5])]
            ^ SLICE8[1][usize::from(c[6])]
            ^ SLICE8[0][usize::from(c[7])];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of `key` that decides its slot: the bytes between the first `{` and the first `}`
/// after it, if that is non-empty; otherwise the whole key (so `foo{}{bar}` hashes entirely).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = find_byte(key, b'{') else {
        return key;
    };
    let after = &key[open + 1..];
    match after.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &after[..close],
        _ => key,
    }
}

/// The first `needle` in `hay`, eight bytes at a time: most keys have no `{`, and a byte
/// loop over the whole key cost more than the CRC of it.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = u64::from_ne_bytes([needle; 8]);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        // Zero bytes of `w` are the matches: the classic "has a zero byte" test.
        let w = u64::from_ne_bytes(word) ^ pattern;
        if w.wrapping_sub(LOW) & !w & HIGH != 0 {
            return c.iter().position(|&b| b == needle).map(|i| at + i);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// Cluster slot of `key`, as CLUSTER KEYSLOT computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    // 16384 is a power of two, so the modulo is a mask.
    crc16(hash_tag(key)) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time reference for the table.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn table_matches_redis_crc16_c() {
        assert_eq!(
            CRC16_TABLE[..8],
            [
                0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7
            ]
        );
        assert_eq!(CRC16_TABLE[8], 0x8108);
        assert_eq!(CRC16_TABLE[255], 0x1ef0);
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Examples from the cluster specification.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"{a}"), b"a");
    }

    proptest! {
        #[test]
        fn table_equals_bitwise(data in prop::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(crc16(&data), crc16_bitwise(&data));
        }

        #[test]
        fn find_byte_finds_the_first(hay in prop::collection::vec(
            prop::sample::select(b"{}ab\x7b\xfb\x00\x80".to_vec()), 0..40)) {
            prop_assert_eq!(find_byte(&hay, b'{'), hay.iter().position(|&b| b == b'{'));
        }

        #[test]
        fn slot_in_range_and_tag_decides(
            key in prop::collection::vec(any::<u8>(), 0..32),
            tag in prop::collection::vec(any::<u8>().prop_filter("no }", |b| *b != b'}'), 1..8),
            suffix in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            prop_assert!(key_slot(&key) < SLOTS);
            let mut tagged = b"x{".to_vec();
            tagged.extend_from_slice(&tag);
            tagged.push(b'}');
            tagged.extend_from_slice(&suffix);
            if !tag.contains(&b'{') {
                prop_assert_eq!(key_slot(&tagged), crc16(&tag) % SLOTS);
            }
        }
    }
}
