//! `simplekv_engine::record`: `decode`, `decode_header` and `RecordIter` on arbitrary bytes, and
//! `encode` of fuzz-derived fields.
//!
//! Invariants checked:
//! - decoding never panics; an error names exactly what is wrong with the bytes (the declared
//!   lengths, the tag byte, the stored and computed checksums);
//! - whatever decodes re-encodes (`record::encode` of its fields) to exactly the bytes it was
//!   decoded from: the format has one encoding per record;
//! - `RecordIter` returns back-to-back records from offset 0, each what `decode` gives at its
//!   offset, and stops at the first one that does not decode, reporting that offset and error;
//! - records encoded from fuzz-derived fields decode back identically, alone and as a stream;
//! - any single-bit flip inside one of them is rejected, and a stream with one flipped record
//!   yields exactly the records before it.
#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use simplekv_engine::record::{
    self, DecodeError, HEADER_LEN, MAX_KEY_LEN_HARD, MAX_VALUE_LEN_HARD, RecordIter, RecordRef, Tag,
};

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn reencode(r: &RecordRef<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = record::encode_in_batch(
        &mut out,
        r.header.lsn,
        r.header.epoch,
        r.header.expire,
        r.header.tag,
        r.header.more,
        r.key,
        r.value,
    );
    assert_eq!(n, out.len());
    out
}

/// Checks `decode(buf)` against what the bytes say.
fn check_decode(buf: &[u8]) -> Result<usize, DecodeError> {
    let res = record::decode(buf);
    let hdr = record::decode_header(buf);
    match res {
        Ok(r) => {
            assert_eq!(hdr, Ok(r.header));
            let len = r.header.record_len();
            assert!(len <= buf.len());
            assert_eq!(r.key.len(), r.header.key_len as usize);
            assert_eq!(r.value.len(), r.header.val_len as usize);
            assert_eq!(Tag::from_u8(buf[24] & !record::MORE), Some(r.header.tag));
            assert_eq!(buf[24] & record::MORE != 0, r.header.more);
            assert_eq!(
                u32_at(buf, 0),
                crc32_ieee(&buf[4..len]),
                "CRC is not CRC-32/IEEE"
            );
            assert_eq!(
                reencode(&r),
                &buf[..len],
                "decoded record does not re-encode to its bytes"
            );
            Ok(len)
        }
        Err(e) => {
            match e {
                DecodeError::Truncated { need, have } => {
                    assert_eq!(have, buf.len());
                    assert!(need > have);
                    if buf.len() < HEADER_LEN {
                        assert_eq!(need, HEADER_LEN);
                    } else {
                        let h = hdr.expect("header decodes when only the body is short");
                        assert_eq!(need, h.record_len());
                    }
                }
                DecodeError::BadTag(t) => {
                    assert!(buf.len() >= HEADER_LEN);
                    assert_eq!(t, buf[24]);
                    assert_eq!(Tag::from_u8(t & !record::MORE), None);
                    assert_eq!(hdr, Err(e));
                }
                DecodeError::BadLength { key_len, val_len } => {
                    assert_eq!(key_len, u32_at(buf, 25));
                    assert_eq!(val_len, u32_at(buf, 29));
                    assert!(key_len > MAX_KEY_LEN_HARD || val_len > MAX_VALUE_LEN_HARD);
                    assert_eq!(hdr, Err(e));
                }
                DecodeError::BadChecksum { stored, computed } => {
                    let h = hdr.expect("a checksum is only checked after the header");
                    assert_eq!(stored, u32_at(buf, 0));
                    assert_eq!(computed, crc32_ieee(&buf[4..h.record_len()]));
                    assert_ne!(stored, computed);
                }
                DecodeError::LsnOutOfOrder { .. } => {
                    panic!("decode returned {e:?}: only recovery finds LSNs out of order")
                }
            }
            let _ = e.to_string();
            Err(e)
        }
    }
}

/// CRC-32 (IEEE), bitwise: an implementation independent of the one under test.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn check_iter(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut it = RecordIter::new(buf);
    let mut expect_at = 0;
    let mut seen = Vec::new();
    for (at, r) in it.by_ref() {
        assert_eq!(at, expect_at, "records are not back to back");
        let again = record::decode(&buf[at..]).expect("iterated record decodes");
        assert_eq!(again, r);
        let len = r.header.record_len();
        seen.push((at, len));
        expect_at = at + len;
    }
    assert_eq!(it.position(), expect_at);
    assert!(it.next().is_none(), "iterator resumed after stopping");
    match it.error() {
        None => assert_eq!(expect_at, buf.len(), "stopped early without an error"),
        Some((off, e)) => {
            assert_eq!(off, expect_at);
            assert_eq!(record::decode(&buf[off..]).err(), Some(e));
        }
    }
    seen
}

#[derive(Debug)]
struct Fields {
    lsn: u64,
    epoch: u32,
    expire: u64,
    tag: Tag,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn fields(u: &mut Unstructured<'_>) -> ArbResult<Fields> {
    let tag = *u.choose(&[Tag::Put, Tag::Delete, Tag::Expire, Tag::Clear])?;
    let klen = u.int_in_range(0..=40usize)?;
    let key = u.bytes(klen)?.to_vec();
    let vlen = u.int_in_range(0..=200usize)?;
    let value = u.bytes(vlen)?.to_vec();
    Ok(Fields {
        lsn: u.arbitrary()?,
        epoch: u.arbitrary()?,
        expire: u.arbitrary()?,
        tag,
        key,
        value,
    })
}

fn same(r: &RecordRef<'_>, f: &Fields) -> bool {
    r.header.lsn == f.lsn
        && r.header.epoch == f.epoch
        && r.header.expire == f.expire
        && r.header.tag == f.tag
        && r.key == f.key
        && r.value == f.value
}

fn encoded(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let n = u.int_in_range(1..=4usize)?;
    let mut recs = Vec::with_capacity(n);
    for _ in 0..n {
        recs.push(fields(u)?);
    }
    let mut stream = Vec::new();
    let mut bounds = Vec::new();
    for f in &recs {
        let start = stream.len();
        let len = record::encode(
            &mut stream,
            f.lsn,
            f.epoch,
            f.expire,
            f.tag,
            &f.key,
            &f.value,
        );
        assert_eq!(len, HEADER_LEN + f.key.len() + f.value.len());
        assert_eq!(stream.len(), start + len);
        let alone = record::decode(&stream[start..]).expect("fresh record decodes");
        assert!(same(&alone, f), "record did not round-trip: {f:?}");
        assert_eq!(alone.header.record_len(), len);
        bounds.push((start, len));
    }
    assert_eq!(check_iter(&stream), bounds);
    for ((at, r), f) in RecordIter::new(&stream).zip(&recs) {
        assert!(same(&r, f), "record at {at} did not round-trip in a stream");
    }

    // Single-bit flips: exhaustively for a small first record, else at fuzzer-chosen bits.
    let (first_at, first_len) = bounds[0];
    let bits = first_len * 8;
    let chosen: Vec<usize> = if first_len <= 96 {
        (0..bits).collect()
    } else {
        let k = u.int_in_range(1..=8usize)?;
        (0..k)
            .map(|_| u.int_in_range(0..=bits - 1))
            .collect::<ArbResult<_>>()?
    };
    let victim = u.int_in_range(0..=n - 1)?;
    let (vat, vlen) = bounds[victim];
    let vbit = u.int_in_range(0..=vlen * 8 - 1)?;
    for bit in chosen {
        let mut rec = stream[first_at..first_at + first_len].to_vec();
        rec[bit / 8] ^= 1 << (bit % 8);
        assert!(
            record::decode(&rec).is_err(),
            "flip of bit {bit} of {rec:?} went unnoticed"
        );
    }
    // One flipped record inside the stream: exactly the records before it survive.
    let mut damaged = stream.clone();
    damaged[vat + vbit / 8] ^= 1 << (vbit % 8);
    let got = check_iter(&damaged);
    assert_eq!(
        got,
        bounds[..victim],
        "flip of bit {vbit} in record {victim} was not where the stream stopped"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes, at every offset where a record could start.
    let _ = check_decode(data);
    for (at, _) in check_iter(data) {
        let _ = check_decode(&data[at..]);
    }
    if data.len() > HEADER_LEN {
        let _ = check_decode(&data[..HEADER_LEN]);
    }

    let _ = encoded(&mut Unstructured::new(data));
});
