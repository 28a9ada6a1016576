//! Bitmap commands on string values (Redis's "bitmap" group): SETBIT, GETBIT, BITCOUNT,
//! BITPOS, with Redis 7.0's replies and errors. Bit 0 is the most significant bit of the
//! first byte. A value is stored whole, so SETBIT rewrites it (as SETRANGE does): fine for
//! the small and medium bitmaps strings usually hold, costly for one of hundreds of MiB.
use simplekv_engine::Store;

use super::{ERR_SYNTAX, ErrText, ExecCtx, err, parse_i64, storage_err};
use crate::resp::write_integer;

type Res = Result<(), ErrText>;

const ERR_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const ERR_BIT: &str = "ERR bit is not an integer or out of range";

pub(crate) fn exec(
    name: &str,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let key = args[1];
    match name {
        "setbit" => setbit(store, key, args[2], args[3], ctx, out),
        "getbit" => getbit(store, key, args[2], ctx, out),
        "bitcount" => bitcount(store, key, &args[2..], out),
        "bitpos" => bitpos(store, key, &args[2..], out),
        "bitfield" => super::bitfield::exec(store, key, &args[2..], false, ctx, out),
        "bitfield_ro" => super::bitfield::exec(store, key, &args[2..], true, ctx, out),
        _ => Err(format!("ERR internal error: '{name}' is no bitmap command")
            .into_bytes()
            .into()),
    }
}

/// A bit offset as Redis reads it: 0 or more, and within a string of proto-max-bulk-len.
fn parse_offset(arg: &[u8], ctx: &ExecCtx) -> Result<u64, ErrText> {
    let n = crate::resp::string2ll(arg).ok_or_else(|| err(ERR_OFFSET))?;
    match u64::try_from(n) {
        Ok(n) if (n >> 3) < ctx.proto_max_bulk_len as u64 => Ok(n),
        _ => Err(err(ERR_OFFSET)),
    }
}

fn bit_at(bytes: &[u8], offset: u64) -> u8 {
    let byte = usize::try_from(offset >> 3).ok().and_then(|i| bytes.get(i));
    byte.map_or(0, |b| (b >> (7 - (offset & 7))) & 1)
}

fn setbit(
    store: &mut Store,
    key: &[u8],
    offset: &[u8],
    bit: &[u8],
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let offset = parse_offset(offset, ctx)?;
    let on = match bit {
        b"0" => false,
        b"1" => true,
        _ => return Err(err(ERR_BIT)),
    };
    let byte = offset >> 3;
    let Grown {
        meta,
        old_len,
        new_len,
        mut buf,
    } = grown_to(store, key, byte + 1)?;
    let old = bit_at(&buf, offset);
    let mask = 1u8 << (7 - (offset & 7));
    let b = &mut buf[byte as usize];
    *b = if on { *b | mask } else { *b & !mask };
    // As Redis 7.0: a bit set to what it was, in a value that did not grow, is no write
    // (and does not count as a change for WATCH).
    if meta.is_none() || new_len > old_len || old != u8::from(on) {
        store
            .put(key, &buf, meta.and_then(|m| m.expire))
            .map_err(storage_err)?;
    }
    write_integer(out, i64::from(old));
    Ok(())
}

/// A string value read for a bit command that writes up to byte `len - 1`: padded with zeros
/// to at least `len` bytes (a missing key reads as empty), as Redis's
/// lookupStringForBitCommand grows it.
pub(super) struct Grown {
    pub meta: Option<simplekv_engine::KeyMeta>,
    pub old_len: u64,
    pub new_len: u64,
    pub buf: Vec<u8>,
}

pub(super) fn grown_to(store: &Store, key: &[u8], len: u64) -> Result<Grown, ErrText> {
    let meta = store.meta(key);
    let old_len = meta.map_or(0, |m| u64::from(m.value_len));
    let new_len = old_len.max(len);
    super::strings::check_engine_value_len(store, new_len)?;
    let mut buf = match meta {
        Some(_) => store
            .get_with(key, |v| {
                let mut n = Vec::with_capacity(new_len as usize);
                n.extend_from_slice(v);
                n
            })
            .map_err(storage_err)?
            .unwrap_or_default(),
        None => Vec::with_capacity(new_len as usize),
    };
    buf.resize(new_len as usize, 0);
    Ok(Grown {
        meta,
        old_len,
        new_len,
        buf,
    })
}

fn getbit(store: &Store, key: &[u8], offset: &[u8], ctx: &ExecCtx, out: &mut Vec<u8>) -> Res {
    let offset = parse_offset(offset, ctx)?;
    let bit = store
        .get_with(key, |v| bit_at(v, offset))
        .map_err(storage_err)?
        .unwrap_or(0);
    write_integer(out, i64::from(bit));
    Ok(())
}

/// BYTE or BIT (any case).
fn parse_unit(arg: &[u8]) -> Result<bool, ErrText> {
    if arg.eq_ignore_ascii_case(b"bit") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"byte") {
        Ok(false)
    } else {
        Err(err(ERR_SYNTAX))
    }
}

/// A range as Redis's bitcount/bitpos resolve it over `len` bytes: negative indexes from the
/// end, clamped; with `bit` units, the byte range and the masks of the bits outside it in the
/// first and last byte. `None`: empty.
struct Span {
    start: usize,
    end: usize,
    first_mask: u8,
    last_mask: u8,
}

fn span(len: usize, mut start: i64, mut end: i64, bit: bool) -> Option<Span> {
    let mut total = i64::try_from(len).unwrap_or(i64::MAX);
    if bit {
        total = total.saturating_mul(8);
    }
    if start < 0 {
        start = start.saturating_add(total);
    }
    if end < 0 {
        end = end.saturating_add(total);
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_mask, mut last_mask) = (0u8, 0u8);
    if bit && start <= end {
        first_mask = !((1u16 << (8 - (start & 7))) - 1) as u8;
        last_mask = ((1u16 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    if start > end {
        return None;
    }
    Some(Span {
        start: start as usize,
        end: end as usize,
        first_mask,
        last_mask,
    })
}

fn popcount(bytes: &[u8]) -> i64 {
    bytes.iter().map(|b| i64::from(b.count_ones() as u8)).sum()
}

fn bitcount(store: &Store, key: &[u8], rest: &[&[u8]], out: &mut Vec<u8>) -> Res {
    // As Redis 7.0: a missing key is 0 before the arguments are read.
    if !store.exists(key) {
        write_integer(out, 0);
        return Ok(());
    }
    let range = match rest.len() {
        0 => None,
        2 | 3 => {
            let start = parse_i64(rest[0])?;
            let end = parse_i64(rest[1])?;
            // As Redis 7.0: an empty range of negative indexes answers before the unit is
            // read.
            if start < 0 && end < 0 && start > end {
                write_integer(out, 0);
                return Ok(());
            }
            let bit = match rest.get(2) {
                Some(u) => parse_unit(u)?,
                None => false,
            };
            Some((start, end, bit))
        }
        _ => return Err(err(ERR_SYNTAX)),
    };
    let n = store
        .get_with(key, |v| {
            let Some((start, end, bit)) = range else {
                return popcount(v);
            };
            let Some(s) = span(v.len(), start, end, bit) else {
                return 0;
            };
            let mut n = popcount(&v[s.start..=s.end]);
            if s.first_mask != 0 {
                n -= i64::from((v[s.start] & s.first_mask).count_ones() as u8);
            }
            if s.last_mask != 0 {
                n -= i64::from((v[s.end] & s.last_mask).count_ones() as u8);
            }
            n
        })
        .map_err(storage_err)?
        .unwrap_or(0);
    write_integer(out, n);
    Ok(())
}

/// The first bit equal to `bit` in `bytes` (from the first byte's top bit); not found: -1
/// when looking for a 1, the bit just past the end when looking for a 0 (the string reads as
/// followed by zeros), as Redis's redisBitpos.
fn first_bit(bytes: &[u8], bit: bool) -> i64 {
    for (i, &b) in bytes.iter().enumerate() {
        let b = if bit { b } else { !b };
        if b != 0 {
            return i as i64 * 8 + i64::from(b.leading_zeros() as u8);
        }
    }
    if bit { -1 } else { bytes.len() as i64 * 8 }
}

fn bitpos(store: &Store, key: &[u8], rest: &[&[u8]], out: &mut Vec<u8>) -> Res {
    let bit = match crate::resp::string2ll(rest[0]) {
        Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(err("ERR The bit argument must be 1 or 0.")),
        None => return Err(err(super::ERR_NOT_INTEGER)),
    };
    let Some(meta) = store.meta(key) else {
        // A missing key reads as endless zeros.
        write_integer(out, if bit { -1 } else { 0 });
        return Ok(());
    };
    let len = meta.value_len as usize;
    let (range, end_given) = match rest.len() {
        1 => (None, false),
        2..=4 => {
            let start = parse_i64(rest[1])?;
            let unit_bit = match rest.get(3) {
                Some(u) => parse_unit(u)?,
                None => false,
            };
            let (end, given) = match rest.get(2) {
                Some(e) => (parse_i64(e)?, true),
                None if unit_bit => (i64::try_from(len).unwrap_or(i64::MAX) * 8 + 7, false),
                None => (i64::try_from(len).unwrap_or(i64::MAX) - 1, false),
            };
            (Some((start, end, unit_bit)), given)
        }
        _ => return Err(err(ERR_SYNTAX)),
    };
    let pos = store
        .get_with(key, |v| {
            let s = match range {
                None if v.is_empty() => return -1,
                None => Span {
                    start: 0,
                    end: v.len() - 1,
                    first_mask: 0,
                    last_mask: 0,
                },
                Some((start, end, unit_bit)) => match span(v.len(), start, end, unit_bit) {
                    Some(s) => s,
                    None => return -1,
                },
            };
            bitpos_in(v, s, bit, end_given)
        })
        .map_err(storage_err)?
        .unwrap_or(if bit { -1 } else { 0 });
    write_integer(out, pos);
    Ok(())
}

/// Redis's bitposCommand over a resolved span.
fn bitpos_in(v: &[u8], s: Span, bit: bool, end_given: bool) -> i64 {
    let mut start = s.start;
    let mut bytes = s.end - s.start + 1;
    let pos;
    'result: {
        if s.first_mask != 0 {
            let mut c = if bit {
                v[start] & !s.first_mask
            } else {
                v[start] | s.first_mask
            };
            if s.last_mask != 0 && bytes == 1 {
                c = if bit {
                    c & !s.last_mask
                } else {
                    c | s.last_mask
                };
            }
            let p = first_bit(&[c], bit);
            if bytes == 1 || (p != -1 && p != 8) {
                pos = p;
                break 'result;
            }
            start += 1;
            bytes -= 1;
        }
        let cur = bytes - usize::from(s.last_mask != 0);
        if cur > 0 {
            let p = first_bit(&v[start..start + cur], bit);
            if bytes == cur || (p != -1 && p != cur as i64 * 8) {
                pos = p;
                break 'result;
            }
            start += cur;
            bytes -= cur;
        }
        let c = if bit {
            v[s.end] & !s.last_mask
        } else {
            v[s.end] | s.last_mask
        };
        pos = first_bit(&[c], bit);
    }
    // Looking for a 0 within an explicit end: the first bit past the range is no answer.
    if end_given && !bit && pos == bytes as i64 * 8 {
        return -1;
    }
    if pos == -1 {
        -1
    } else {
        pos + start as i64 * 8
    }
}

#[cfg(test)]
mod tests {
    use super::super::Effect;
    use super::super::testutil::Harness;
    use super::{Span, bitpos_in, first_bit, span};
    use crate::resp::Reply;

    fn set(h: &mut Harness, key: &str, value: &[u8]) {
        h.run_bytes(&[b"set", key.as_bytes(), value]);
    }

    /// A bit-by-bit reading of Redis's BITCOUNT/BITPOS rules: resolve the range (negative
    /// indexes from the end, clamped), in bits, and look at each bit.
    fn model_bits(v: &[u8], range: Option<(i64, i64, bool)>) -> Option<(i64, i64)> {
        let len = v.len() as i64;
        let (s, e) = match range {
            None => (0, len * 8 - 1),
            Some((mut s, mut e, unit_bit)) => {
                let total = if unit_bit { len * 8 } else { len };
                if s < 0 {
                    s += total;
                }
                if e < 0 {
                    e += total;
                }
                s = s.max(0);
                e = e.max(0).min(total - 1);
                if s > e {
                    return None;
                }
                if unit_bit { (s, e) } else { (s * 8, e * 8 + 7) }
            }
        };
        (s <= e).then_some((s, e))
    }

    fn bit(v: &[u8], i: i64) -> bool {
        (v[(i / 8) as usize] >> (7 - i % 8)) & 1 == 1
    }

    proptest::proptest! {
        #[test]
        fn bitcount_and_bitpos_match_a_bit_by_bit_model(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6),
            start in -20i64..20,
            end in -20i64..20,
            unit in 0u8..3,
            want in proptest::prelude::any::<bool>(),
            end_given in proptest::prelude::any::<bool>(),
        ) {
            let mut h = Harness::new();
            h.run_bytes(&[b"set", b"k", &v]);
            let unit_arg = ["", "byte", "bit"][unit as usize];
            let unit_bit = unit == 2;
            let (s, e) = (start.to_string(), end.to_string());
            // BITCOUNT: the range given, or none.
            let mut args = vec!["bitcount", "k", s.as_str(), e.as_str()];
            if unit > 0 {
                args.push(unit_arg);
            }
            let count = if start < 0 && end < 0 && start > end {
                0
            } else {
                model_bits(&v, Some((start, end, unit_bit)))
                    .map_or(0, |(a, b)| (a..=b).filter(|&i| bit(&v, i)).count() as i64)
            };
            proptest::prop_assert_eq!(h.int(&args), count);
            // BITPOS: from `start`, to `end` if given (a unit needs an end).
            let b = if want { "1" } else { "0" };
            let mut args = vec!["bitpos", "k", b, s.as_str()];
            let end_given = end_given || unit > 0;
            if end_given {
                args.push(e.as_str());
            }
            if unit > 0 {
                args.push(unit_arg);
            }
            let end_or_last = if end_given {
                end
            } else if unit_bit {
                v.len() as i64 * 8 + 7
            } else {
                v.len() as i64 - 1
            };
            let pos = match model_bits(&v, Some((start, end_or_last, unit_bit))) {
                None => -1,
                Some((a, z)) => match (a..=z).find(|&i| bit(&v, i) == want) {
                    Some(i) => i,
                    None if want || end_given => -1,
                    None => z + 1,
                },
            };
            proptest::prop_assert_eq!(h.int(&args), pos, "{:?} {:?}", v, args);
        }
    }

    /// Redis 7.0's answers (taken from redis-server for the same commands).
    #[test]
    fn bitcount_and_bitpos_answer_as_redis() {
        let mut h = Harness::new();
        set(&mut h, "k", b"foobar");
        assert_eq!(h.int(&["bitcount", "k"]), 26);
        assert_eq!(h.int(&["bitcount", "k", "0", "0"]), 4);
        assert_eq!(h.int(&["bitcount", "k", "1", "1", "byte"]), 6);
        assert_eq!(h.int(&["bitcount", "k", "5", "30", "BIT"]), 17);
        assert_eq!(h.int(&["bitcount", "k", "-1", "-2", "nope"]), 0);
        assert_eq!(h.error(&["bitcount", "k", "0"]), "ERR syntax error");
        assert_eq!(
            h.error(&["bitcount", "k", "0", "1", "nope"]),
            "ERR syntax error"
        );
        assert_eq!(h.int(&["bitcount", "missing", "0"]), 0);
        set(&mut h, "a", b"\xff\xf0\x00");
        set(&mut h, "b", b"\x00\xff\xf0");
        assert_eq!(h.int(&["bitpos", "a", "0"]), 12);
        assert_eq!(h.int(&["bitpos", "b", "1", "0"]), 8);
        assert_eq!(h.int(&["bitpos", "b", "1", "2"]), 16);
        assert_eq!(h.int(&["bitpos", "b", "1", "2", "-1", "byte"]), 16);
        assert_eq!(h.int(&["bitpos", "b", "1", "7", "15", "bit"]), 8);
        assert_eq!(h.int(&["bitpos", "b", "0", "0", "-1"]), 0);
        assert_eq!(h.int(&["bitpos", "a", "0", "0", "0"]), -1);
        assert_eq!(h.int(&["bitpos", "a", "0", "0", "1", "bit"]), -1);
        assert_eq!(h.int(&["bitpos", "missing", "1"]), -1);
        assert_eq!(h.int(&["bitpos", "missing", "0"]), 0);
        assert_eq!(
            h.error(&["bitpos", "a", "2"]),
            "ERR The bit argument must be 1 or 0."
        );
    }

    #[test]
    fn setbit_grows_the_string_keeps_the_ttl_and_answers_the_old_bit() {
        let mut h = Harness::new();
        assert_eq!(h.int(&["setbit", "k", "7", "1"]), 0);
        assert_eq!(h.value("k"), Some(vec![0x01]));
        assert_eq!(h.int(&["setbit", "k", "7", "0"]), 1);
        assert_eq!(h.int(&["setbit", "k", "17", "1"]), 0);
        assert_eq!(h.value("k"), Some(vec![0x00, 0x00, 0x40]));
        assert_eq!(h.int(&["getbit", "k", "17"]), 1);
        assert_eq!(h.int(&["getbit", "k", "100"]), 0);
        assert_eq!(h.int(&["getbit", "missing", "3"]), 0);
        h.run(&["expire", "k", "100"]);
        let ttl = h.expire_of("k");
        assert!(ttl.is_some());
        let (reply, effect) = h.run_bytes(&[b"setbit", b"k", b"0", b"1"]);
        assert_eq!((reply, effect), (Reply::Integer(0), Effect::Wrote));
        assert_eq!(h.expire_of("k"), ttl);
        // The same bit again: nothing to write.
        let (reply, effect) = h.run_bytes(&[b"setbit", b"k", b"0", b"1"]);
        assert_eq!((reply, effect), (Reply::Integer(1), Effect::Read));
        let (_, effect) = h.run_bytes(&[b"setbit", b"k", b"40", b"0"]);
        assert_eq!(effect, Effect::Wrote, "the value grew");
        for (offset, bit, e) in [
            (
                "-1",
                "1",
                "ERR bit offset is not an integer or out of range",
            ),
            ("x", "1", "ERR bit offset is not an integer or out of range"),
            (
                "4294967296",
                "1",
                "ERR bit offset is not an integer or out of range",
            ),
            ("1", "2", "ERR bit is not an integer or out of range"),
            ("1", "01", "ERR bit is not an integer or out of range"),
        ] {
            assert_eq!(h.error(&["setbit", "k", offset, bit]), e, "{offset} {bit}");
        }
    }

    #[test]
    fn first_bit_reads_from_the_top_bit_and_pads_with_zeros() {
        assert_eq!(first_bit(&[0x00, 0x10], true), 11);
        assert_eq!(first_bit(&[0xff, 0xff], false), 16);
        assert_eq!(first_bit(&[0x00], true), -1);
        assert_eq!(first_bit(&[0xfe], false), 7);
    }

    #[test]
    fn spans_resolve_like_redis() {
        let s = span(3, 0, -1, false).unwrap();
        assert_eq!((s.start, s.end), (0, 2));
        assert!(span(3, 2, 1, false).is_none());
        let s = span(2, 5, 12, true).unwrap();
        assert_eq!(
            (s.start, s.end, s.first_mask, s.last_mask),
            (0, 1, 0xf8, 0x07)
        );
        let s = span(1, 0, 7, true).unwrap();
        assert_eq!((s.first_mask, s.last_mask), (0, 0));
        let v = [0xffu8, 0xf0, 0x00];
        let whole = Span {
            start: 0,
            end: 2,
            first_mask: 0,
            last_mask: 0,
        };
        assert_eq!(bitpos_in(&v, whole, false, false), 12);
    }
}
