//! String commands: GET, SET and its variants, GETEX/GETDEL/GETSET, counters, APPEND, STRLEN,
//! GETRANGE/SUBSTR, SETRANGE. Each follows the corresponding function of Redis 7.0's
//! `t_string.c`, including the order in which it checks things (which decides which error a
//! client sees when several apply).
use simplekv_engine::{Store, WriteError};

use super::{
    CommandSpec, ERR_SYNTAX, ErrText, ExecCtx, err, invalid_expire, ldouble, parse_i64, storage_err,
};
use crate::resp::{string2ll, write_bulk, write_decimal, write_integer, write_null, write_ok};

// Option flags, as OBJ_* in t_string.c.
const NX: u16 = 1 << 0;
const XX: u16 = 1 << 1;
const EX: u16 = 1 << 2;
const PX: u16 = 1 << 3;
const KEEPTTL: u16 = 1 << 4;
const GET: u16 = 1 << 5;
const EXAT: u16 = 1 << 6;
const PXAT: u16 = 1 << 7;
const PERSIST: u16 = 1 << 8;

const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";
const ERR_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

type Res = Result<(), ErrText>;

pub(crate) fn exec(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let key = args[1];
    let arg = |i: usize| args.get(i).copied().unwrap_or_default();
    match spec.name {
        "get" => get(store, key, out),
        "set" => set(spec, args, store, ctx, out),
        "setnx" => setnx(store, key, arg(2), out),
        "setex" => setex(spec, store, key, arg(2), arg(3), EX, ctx, out),
        "psetex" => setex(spec, store, key, arg(2), arg(3), PX, ctx, out),
        "getset" => getset(store, key, arg(2), out),
        "getdel" => getdel(store, key, out),
        "getex" => getex(spec, args, store, ctx, out),
        "incr" => incr_by(store, key, 1, out),
        "decr" => incr_by(store, key, -1, out),
        "incrby" => incr_by(store, key, parse_i64(arg(2))?, out),
        "decrby" => {
            let by = parse_i64(arg(2))?;
            if by == i64::MIN {
                return Err(err("ERR decrement would overflow"));
            }
            incr_by(store, key, -by, out)
        }
        "incrbyfloat" => incrbyfloat(store, key, arg(2), out),
        "append" => append(store, key, arg(2), ctx, out),
        "strlen" => {
            write_integer(out, store.meta(key).map_or(0, |m| m.value_len.into()));
            Ok(())
        }
        "getrange" | "substr" => getrange(store, key, arg(2), arg(3), out),
        "setrange" => setrange(store, key, arg(2), arg(3), ctx, out),
        _ => Err(format!(
            "ERR internal error: '{}' has no single-key implementation",
            spec.name
        )
        .into_bytes()
        .into()),
    }
}

fn get(store: &Store, key: &[u8], out: &mut Vec<u8>) -> Res {
    match store.get_with(key, |v| write_bulk(out, v)) {
        Ok(Some(())) => Ok(()),
        Ok(None) => {
            write_null(out);
            Ok(())
        }
        Err(e) => Err(storage_err(e)),
    }
}

/// Appends the value of `key` as a bulk reply, or a null; returns whether the key existed.
fn write_old_value(store: &Store, key: &[u8], out: &mut Vec<u8>) -> Result<bool, ErrText> {
    match store.get_with(key, |v| write_bulk(out, v)) {
        Ok(Some(())) => Ok(true),
        Ok(None) => {
            write_null(out);
            Ok(false)
        }
        Err(e) => Err(storage_err(e)),
    }
}

/// Runs `write` after a reply was already appended from `mark` on: if the write fails, the
/// reply is taken back so that only the error is sent.
fn or_retract<T>(
    out: &mut Vec<u8>,
    mark: usize,
    write: Result<T, WriteError>,
) -> Result<T, ErrText> {
    write.map_err(|e| {
        out.truncate(mark);
        storage_err(e)
    })
}

/// SET/GETEX options, parsed as parseExtendedStringArgumentsOrReply does.
struct ExtArgs<'a> {
    flags: u16,
    expire: Option<&'a [u8]>,
    unit_ms: bool,
}

fn parse_extended<'a>(args: &[&'a [u8]], for_set: bool) -> Result<ExtArgs<'a>, ErrText> {
    let mut a = ExtArgs {
        flags: 0,
        expire: None,
        unit_ms: false,
    };
    let mut j = if for_set { 3 } else { 2 };
    while let Some(&opt) = args.get(j) {
        let next = args.get(j + 1).copied();
        let f = a.flags;
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        // Each option is refused when one it conflicts with came before (so the second of
        // a conflicting pair is the "syntax error"); repeating EX/PX/EXAT/PXAT is allowed and
        // the last value wins, as in Redis.
        let mut take = |flag: u16, ms: bool| {
            a.flags |= flag;
            a.expire = next;
            a.unit_ms = ms;
        };
        if for_set && is("nx") && f & XX == 0 {
            a.flags |= NX;
        } else if for_set && is("xx") && f & NX == 0 {
            a.flags |= XX;
        } else if for_set && is("get") {
            a.flags |= GET;
        } else if for_set && is("keepttl") && f & (PERSIST | EX | EXAT | PX | PXAT) == 0 {
            a.flags |= KEEPTTL;
        } else if !for_set && is("persist") && f & (EX | EXAT | PX | PXAT | KEEPTTL) == 0 {
            a.flags |= PERSIST;
        } else if is("ex") && f & (KEEPTTL | PERSIST | EXAT | PX | PXAT) == 0 && next.is_some() {
            take(EX, false);
            j += 1;
        } else if is("px") && f & (KEEPTTL | PERSIST | EX | EXAT | PXAT) == 0 && next.is_some() {
            take(PX, true);
            j += 1;
        } else if is("exat") && f & (KEEPTTL | PERSIST | EX | PX | PXAT) == 0 && next.is_some() {
            take(EXAT, false);
            j += 1;
        } else if is("pxat") && f & (KEEPTTL | PERSIST | EX | EXAT | PX) == 0 && next.is_some() {
            take(PXAT, true);
            j += 1;
        } else {
            return Err(err(ERR_SYNTAX));
        }
        j += 1;
    }
    Ok(a)
}

/// getExpireMillisecondsOrReply: the absolute expiry in ms of an EX/PX/EXAT/PXAT argument.
fn expire_at_ms(
    spec: &CommandSpec,
    arg: &[u8],
    flags: u16,
    unit_ms: bool,
    ctx: &ExecCtx,
) -> Result<u64, ErrText> {
    let v = parse_i64(arg)?;
    if v <= 0 || (!unit_ms && v > i64::MAX / 1000) {
        return Err(invalid_expire(spec));
    }
    let mut ms = if unit_ms { v } else { v * 1000 };
    if flags & (EX | PX) != 0 {
        let now = i64::try_from(ctx.now_ms()).unwrap_or(i64::MAX);
        ms = ms.checked_add(now).ok_or_else(|| invalid_expire(spec))?;
    }
    Ok(ms.unsigned_abs())
}

fn set(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let (key, value) = (args[1], args[2]);
    let opts = parse_extended(args, true)?;
    let expire = match opts.expire {
        Some(a) => Some(expire_at_ms(spec, a, opts.flags, opts.unit_ms, ctx)?),
        None => None,
    };
    let mark = out.len();
    let get = opts.flags & GET != 0;
    // A plain SET needs no lookup before the write (the index's first touch of a key is a
    // cache miss, the largest single cost of SET under pipelining).
    let found = if get {
        write_old_value(store, key, out)?
    } else if opts.flags & (NX | XX) != 0 {
        store.exists(key)
    } else {
        false
    };
    if (opts.flags & NX != 0 && found) || (opts.flags & XX != 0 && !found) {
        if !get {
            write_null(out);
        }
        return Ok(());
    }
    let expire = match expire {
        Some(at) => Some(at),
        None if opts.flags & KEEPTTL != 0 => store.meta(key).and_then(|m| m.expire),
        None => None,
    };
    match expire {
        // EXAT/PXAT in the past: the key is deleted (a tombstone, as Redis propagates a
        // DEL), not stored already expired to linger until active expiry.
        Some(at) if at <= ctx.now_ms() => {
            or_retract(out, mark, store.delete(key))?;
        }
        _ => {
            or_retract(out, mark, store.put(key, value, expire))?;
        }
    }
    if !get {
        write_ok(out);
    }
    Ok(())
}

fn setnx(store: &mut Store, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Res {
    if store.exists(key) {
        write_integer(out, 0);
    } else {
        store.put(key, value, None).map_err(storage_err)?;
        write_integer(out, 1);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn setex(
    spec: &CommandSpec,
    store: &mut Store,
    key: &[u8],
    time: &[u8],
    value: &[u8],
    unit: u16,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let at = expire_at_ms(spec, time, unit, unit == PX, ctx)?;
    store.put(key, value, Some(at)).map_err(storage_err)?;
    write_ok(out);
    Ok(())
}

fn getset(store: &mut Store, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Res {
    let mark = out.len();
    write_old_value(store, key, out)?;
    // GETSET is a plain SET: the old TTL goes.
    or_retract(out, mark, store.put(key, value, None))?;
    Ok(())
}

fn getdel(store: &mut Store, key: &[u8], out: &mut Vec<u8>) -> Res {
    let mark = out.len();
    if write_old_value(store, key, out)? {
        or_retract(out, mark, store.delete(key))?;
    }
    Ok(())
}

fn getex(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let key = args[1];
    let opts = parse_extended(args, false)?;
    if !store.exists(key) {
        write_null(out);
        return Ok(());
    }
    // Validated only once the key is known to exist, as in Redis: GETEX on a missing key
    // with a bad time is a null, not an error.
    let expire = match opts.expire {
        Some(a) => Some(expire_at_ms(spec, a, opts.flags, opts.unit_ms, ctx)?),
        None => None,
    };
    let mark = out.len();
    write_old_value(store, key, out)?;
    let write = match expire {
        Some(at) if opts.flags & (EXAT | PXAT) != 0 && at <= ctx.now_ms() => {
            store.delete(key).map(drop)
        }
        Some(at) => store.set_expire(key, Some(at)).map(drop),
        None if opts.flags & PERSIST != 0
            && store.meta(key).is_some_and(|m| m.expire.is_some()) =>
        {
            store.set_expire(key, None).map(drop)
        }
        None => Ok(()),
    };
    or_retract(out, mark, write)
}

fn incr_by(store: &mut Store, key: &[u8], by: i64, out: &mut Vec<u8>) -> Res {
    let old = match store.get_with(key, string2ll).map_err(storage_err)? {
        None => 0,
        Some(Some(v)) => v,
        Some(None) => return Err(err(super::ERR_NOT_INTEGER)),
    };
    let new = old.checked_add(by).ok_or_else(|| err(ERR_OVERFLOW))?;
    let mut digits = Vec::with_capacity(20);
    write_decimal(&mut digits, new);
    // Counters keep the key's TTL (Redis overwrites the value in place).
    let expire = store.meta(key).and_then(|m| m.expire);
    store.put(key, &digits, expire).map_err(storage_err)?;
    write_integer(out, new);
    Ok(())
}

fn incrbyfloat(store: &mut Store, key: &[u8], incr: &[u8], out: &mut Vec<u8>) -> Res {
    const ERR_FLOAT: &str = "ERR value is not a valid float";
    let old = match store.get_with(key, ldouble::parse).map_err(storage_err)? {
        None => ldouble::ZERO,
        Some(Some(v)) => v,
        Some(None) => return Err(err(ERR_FLOAT)),
    };
    let incr = ldouble::parse(incr).ok_or_else(|| err(ERR_FLOAT))?;
    let sum = ldouble::add(old, incr);
    if !matches!(sum, ldouble::LongDouble::Finite { .. }) {
        return Err(err("ERR increment would produce NaN or Infinity"));
    }
    let mut text = Vec::with_capacity(24);
    ldouble::format_human(sum, &mut text);
    let expire = store.meta(key).and_then(|m| m.expire);
    store.put(key, &text, expire).map_err(storage_err)?;
    write_bulk(out, &text);
    Ok(())
}

/// checkStringLength: a string grown to `size + append` bytes must fit proto-max-bulk-len.
fn check_string_length(size: u64, append: usize, ctx: &ExecCtx) -> Res {
    let total = u128::from(size) + append as u128;
    if total > ctx.proto_max_bulk_len as u128 {
        return Err(err(ERR_TOO_LONG));
    }
    Ok(())
}

/// Refuses a value the engine would refuse, before building it (SETRANGE can ask for
/// hundreds of megabytes of padding).
pub(super) fn check_engine_value_len(store: &Store, len: u64) -> Res {
    let max = store.options().max_value_len;
    if len > max as u64 {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        return Err(storage_err(WriteError::ValueTooLarge { len, max }));
    }
    Ok(())
}

fn append(store: &mut Store, key: &[u8], tail: &[u8], ctx: &ExecCtx, out: &mut Vec<u8>) -> Res {
    let Some(meta) = store.meta(key) else {
        store.put(key, tail, None).map_err(storage_err)?;
        write_integer(out, tail.len() as i64);
        return Ok(());
    };
    check_string_length(meta.value_len.into(), tail.len(), ctx)?;
    let new_len = u64::from(meta.value_len) + tail.len() as u64;
    check_engine_value_len(store, new_len)?;
    let value = store
        .get_with(key, |v| {
            let mut n = Vec::with_capacity(v.len() + tail.len());
            n.extend_from_slice(v);
            n.extend_from_slice(tail);
            n
        })
        .map_err(storage_err)?
        .unwrap_or_else(|| tail.to_vec());
    store.put(key, &value, meta.expire).map_err(storage_err)?;
    write_integer(out, value.len() as i64);
    Ok(())
}

/// The bytes GETRANGE returns for `start..=end` of a `len`-byte string, by Redis's rules.
fn range_of(len: usize, start: i64, end: i64) -> Option<std::ops::Range<usize>> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let mut start = if start < 0 { start + len } else { start };
    let mut end = if end < 0 { end + len } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return None;
    }
    Some(start as usize..end as usize + 1)
}

fn getrange(store: &Store, key: &[u8], start: &[u8], end: &[u8], out: &mut Vec<u8>) -> Res {
    let start = parse_i64(start)?;
    let end = parse_i64(end)?;
    let found = store
        .get_with(key, |v| {
            let bytes = range_of(v.len(), start, end).and_then(|r| v.get(r));
            write_bulk(out, bytes.unwrap_or_default());
        })
        .map_err(storage_err)?;
    if found.is_none() {
        write_bulk(out, b"");
    }
    Ok(())
}

fn setrange(
    store: &mut Store,
    key: &[u8],
    offset: &[u8],
    value: &[u8],
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let offset = parse_i64(offset)?;
    let Ok(offset) = u64::try_from(offset) else {
        return Err(err("ERR offset is out of range"));
    };
    let meta = store.meta(key);
    if value.is_empty() {
        // Nothing to write: the length as it is (0 for a missing key, which stays missing).
        write_integer(out, meta.map_or(0, |m| m.value_len.into()));
        return Ok(());
    }
    check_string_length(offset, value.len(), ctx)?;
    let old_len = meta.map_or(0, |m| u64::from(m.value_len));
    let new_len = old_len.max(offset + value.len() as u64);
    check_engine_value_len(store, new_len)?;
    // Both fit in usize: new_len is below the engine's limit, itself a usize.
    let (offset, new_len) = (offset as usize, new_len as usize);
    let mut buf = match meta {
        Some(_) => store
            .get_with(key, |v| {
                let mut n = Vec::with_capacity(new_len);
                n.extend_from_slice(v);
                n
            })
            .map_err(storage_err)?
            .unwrap_or_default(),
        None => Vec::with_capacity(new_len),
    };
    buf.resize(new_len, 0);
    if let Some(dst) = buf.get_mut(offset..offset + value.len()) {
        dst.copy_from_slice(value);
    }
    store
        .put(key, &buf, meta.and_then(|m| m.expire))
        .map_err(storage_err)?;
    write_integer(out, new_len as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use simplekv_engine::Options;

    use super::super::Effect;
    use super::super::testutil::{Harness, T0};
    use crate::resp::Reply;

    const NOT_INT: &str = "ERR value is not an integer or out of range";
    const SYNTAX: &str = "ERR syntax error";

    #[test]
    fn get_and_set() {
        let mut h = Harness::new();
        assert_eq!(h.bulk(&["get", "k"]), None);
        h.ok(&["set", "k", "v"]);
        assert_eq!(h.bulk(&["GET", "k"]), Some("v".into()));
        h.ok(&["SeT", "k", ""]);
        assert_eq!(h.bulk(&["get", "k"]), Some("".into()));
    }

    #[test]
    fn values_and_keys_are_binary_safe() {
        let mut h = Harness::new();
        let value: Vec<u8> = (0..=255u8).chain(*b"\r\n$-1\r\n").collect();
        let key = b"k\0\r\n\xff";
        assert_eq!(h.run_bytes(&[b"set", key, &value]).0, Reply::ok());
        assert_eq!(h.run_bytes(&[b"get", key]).0, Reply::Bulk(value.clone()));
        assert_eq!(h.run_bytes(&[b"get", b"k"]).0, Reply::Null);
        assert_eq!(
            h.run_bytes(&[b"strlen", key]).0,
            Reply::Integer(value.len() as i64)
        );
        assert_eq!(
            h.run_bytes(&[b"getrange", key, b"256", b"-1"]).0,
            Reply::Bulk(b"\r\n$-1\r\n".to_vec())
        );
    }

    #[test]
    fn effects() {
        let mut h = Harness::new();
        assert_eq!(h.run_bytes(&[b"get", b"k"]).1, Effect::Read);
        assert_eq!(h.run_bytes(&[b"set", b"k", b"v"]).1, Effect::Wrote);
        assert_eq!(h.run_bytes(&[b"set", b"k", b"v", b"nx"]).1, Effect::Read);
        assert_eq!(
            h.run_bytes(&[b"set", b"k", b"v", b"ex", b"0"]).1,
            Effect::Read
        );
        assert_eq!(h.run_bytes(&[b"getex", b"k"]).1, Effect::Read);
        assert_eq!(h.run_bytes(&[b"getdel", b"nope"]).1, Effect::Read);
        assert_eq!(h.run_bytes(&[b"incr", b"k"]).1, Effect::Read);
        assert_eq!(h.run_bytes(&[b"getdel", b"k"]).1, Effect::Wrote);
    }

    #[test]
    fn set_nx_xx() {
        let mut h = Harness::new();
        assert_eq!(h.run(&["set", "k", "1", "xx"]), Reply::Null);
        assert_eq!(h.value("k"), None);
        h.ok(&["set", "k", "1", "NX"]);
        assert_eq!(h.run(&["set", "k", "2", "nx"]), Reply::Null);
        assert_eq!(h.value("k"), Some(b"1".to_vec()));
        h.ok(&["set", "k", "3", "Xx"]);
        assert_eq!(h.value("k"), Some(b"3".to_vec()));
        // Repeating a flag is fine.
        h.ok(&["set", "k", "4", "xx", "xx"]);
    }

    #[test]
    fn set_expiry_options_in_any_order() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v", "EX", "10"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 10_000));
        h.ok(&["set", "k", "v", "px", "1500", "xx"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 1500));
        h.ok(&["set", "k", "v", "exat", "1800000000"]);
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_000));
        h.ok(&["set", "k", "v", "xx", "PXAT", "1800000000123"]);
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_123));
        // A later EX replaces an earlier one, as in Redis.
        h.ok(&["set", "k", "v", "ex", "100", "ex", "200"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 200_000));
        // PXAT far in the future is fine: it is not added to the clock.
        h.ok(&["set", "k", "v", "pxat", "9223372036854775807"]);
        assert_eq!(h.expire_of("k"), Some(i64::MAX as u64));
        h.ok(&["set", "k", "v", "exat", "9223372036854775"]);
        assert_eq!(h.expire_of("k"), Some(9_223_372_036_854_775_000));
    }

    #[test]
    fn set_clears_ttl_unless_keepttl() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v", "ex", "100"]);
        h.ok(&["set", "k", "v2"]);
        assert_eq!(h.expire_of("k"), None);
        h.ok(&["set", "k", "v", "ex", "100"]);
        h.ok(&["set", "k", "v3", "KEEPTTL"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 100_000));
        assert_eq!(h.value("k"), Some(b"v3".to_vec()));
        h.ok(&["set", "new", "v", "keepttl"]);
        assert_eq!(h.expire_of("new"), None);
    }

    #[test]
    fn set_syntax_errors() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "orig"]);
        for args in [
            &["set", "k", "v", "nx", "xx"][..],
            &["set", "k", "v", "xx", "nx"],
            &["set", "k", "v", "ex", "1", "px", "1"],
            &["set", "k", "v", "px", "1", "ex", "1"],
            &["set", "k", "v", "ex", "1", "exat", "1"],
            &["set", "k", "v", "pxat", "1", "exat", "1"],
            &["set", "k", "v", "keepttl", "ex", "1"],
            &["set", "k", "v", "px", "1", "keepttl"],
            &["set", "k", "v", "ex"],
            &["set", "k", "v", "pxat"],
            &["set", "k", "v", "persist"],
            &["set", "k", "v", "foo"],
            &["set", "k", "v", "nxx"],
            &["set", "k", "v", "ex", "1", "1"],
        ] {
            assert_eq!(h.error(args), SYNTAX, "{args:?}");
        }
        assert_eq!(h.value("k"), Some(b"orig".to_vec()));
    }

    #[test]
    fn set_bad_times() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "orig"]);
        let invalid = "ERR invalid expire time in 'set' command";
        for (args, want) in [
            (&["set", "k", "v", "ex", "abc"][..], NOT_INT),
            (&["set", "k", "v", "px", "1.5"], NOT_INT),
            (&["set", "k", "v", "ex", "99999999999999999999"], NOT_INT),
            (&["set", "k", "v", "ex", "0"], invalid),
            (&["set", "k", "v", "px", "-1"], invalid),
            (&["set", "k", "v", "exat", "0"], invalid),
            (&["set", "k", "v", "pxat", "-5"], invalid),
            // Seconds that overflow once in milliseconds, or once added to the clock.
            (&["set", "k", "v", "ex", "9223372036854776"], invalid),
            (&["set", "k", "v", "exat", "9223372036854776"], invalid),
            (&["set", "k", "v", "px", "9223372036854775807"], invalid),
            (&["set", "k", "v", "ex", "9223372036854775"], invalid),
        ] {
            assert_eq!(h.error(args), want, "{args:?}");
        }
        // Nothing was written, and GET was not answered before the error.
        assert_eq!(h.error(&["set", "k", "v", "get", "ex", "0"]), invalid);
        assert_eq!(h.value("k"), Some(b"orig".to_vec()));
        assert_eq!(h.expire_of("k"), None);
    }

    #[test]
    fn set_get() {
        let mut h = Harness::new();
        assert_eq!(h.bulk(&["set", "k", "v1", "GET"]), None);
        assert_eq!(h.bulk(&["set", "k", "v2", "get", "get"]), Some("v1".into()));
        assert_eq!(h.value("k"), Some(b"v2".to_vec()));
        // With a failing condition GET still answers the old value and nothing changes.
        assert_eq!(h.bulk(&["set", "k", "v3", "nx", "get"]), Some("v2".into()));
        assert_eq!(h.value("k"), Some(b"v2".to_vec()));
        assert_eq!(h.bulk(&["set", "missing", "v", "get", "xx"]), None);
        assert_eq!(h.value("missing"), None);
        assert_eq!(
            h.bulk(&["set", "k", "v4", "get", "px", "100"]),
            Some("v2".into())
        );
        assert_eq!(h.expire_of("k"), Some(T0 + 100));
    }

    #[test]
    fn set_with_a_past_absolute_time_leaves_no_visible_key() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        h.ok(&["set", "k", "v2", "pxat", "1000"]);
        assert_eq!(h.bulk(&["get", "k"]), None);
        assert_eq!(h.int(&["ttl", "k"]), -2);
    }

    #[test]
    fn setnx() {
        let mut h = Harness::new();
        assert_eq!(h.int(&["setnx", "k", "a"]), 1);
        assert_eq!(h.int(&["SETNX", "k", "b"]), 0);
        assert_eq!(h.value("k"), Some(b"a".to_vec()));
    }

    #[test]
    fn setex_and_psetex() {
        let mut h = Harness::new();
        h.ok(&["setex", "k", "10", "v"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 10_000));
        assert_eq!(h.value("k"), Some(b"v".to_vec()));
        h.ok(&["psetex", "k", "10", "w"]);
        assert_eq!(h.expire_of("k"), Some(T0 + 10));
        assert_eq!(
            h.error(&["setex", "k", "0", "v"]),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            h.error(&["psetex", "k", "-10", "v"]),
            "ERR invalid expire time in 'psetex' command"
        );
        assert_eq!(h.error(&["setex", "k", "x", "v"]), NOT_INT);
        assert_eq!(h.value("k"), Some(b"w".to_vec()));
    }

    #[test]
    fn getset() {
        let mut h = Harness::new();
        assert_eq!(h.bulk(&["getset", "k", "a"]), None);
        h.ok(&["set", "k", "b", "ex", "100"]);
        assert_eq!(h.bulk(&["getset", "k", "c"]), Some("b".into()));
        assert_eq!(h.value("k"), Some(b"c".to_vec()));
        assert_eq!(h.expire_of("k"), None);
    }

    #[test]
    fn getdel() {
        let mut h = Harness::new();
        assert_eq!(h.bulk(&["getdel", "k"]), None);
        h.ok(&["set", "k", "v"]);
        assert_eq!(h.bulk(&["getdel", "k"]), Some("v".into()));
        assert_eq!(h.value("k"), None);
        assert!(!h.store.exists(b"k"));
    }

    #[test]
    fn getex_options() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v", "ex", "100"]);
        assert_eq!(h.bulk(&["getex", "k"]), Some("v".into()));
        assert_eq!(h.expire_of("k"), Some(T0 + 100_000));
        assert_eq!(h.bulk(&["getex", "k", "EX", "5"]), Some("v".into()));
        assert_eq!(h.expire_of("k"), Some(T0 + 5000));
        assert_eq!(h.bulk(&["getex", "k", "px", "5"]), Some("v".into()));
        assert_eq!(h.expire_of("k"), Some(T0 + 5));
        assert_eq!(
            h.bulk(&["getex", "k", "exat", "1800000000"]),
            Some("v".into())
        );
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_000));
        assert_eq!(
            h.bulk(&["getex", "k", "pxat", "1800000000001"]),
            Some("v".into())
        );
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_001));
        assert_eq!(h.bulk(&["getex", "k", "persist"]), Some("v".into()));
        assert_eq!(h.expire_of("k"), None);
        assert!(h.store.exists(b"k"));
        // PERSIST on a key without TTL writes nothing.
        let (r, e) = h.run_bytes(&[b"getex", b"k", b"PERSIST"]);
        assert_eq!((r, e), (Reply::bulk("v"), Effect::Read));
    }

    #[test]
    fn set_with_a_past_absolute_time_deletes_the_key() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "old"]);
        let past = (T0 / 1000 - 1).to_string();
        h.ok(&["set", "k", "v", "exat", &past]);
        assert!(!h.store.exists(b"k"));
        assert_eq!(h.store.len(), 0, "no expired entry lingers");
        h.ok(&["set", "k", "v"]);
        assert_eq!(
            h.bulk(&["set", "k", "new", "pxat", &T0.to_string(), "get"]),
            Some("v".into())
        );
        assert!(!h.store.exists(b"k"));
        // A missing key: nothing to delete, still OK.
        h.ok(&["set", "gone", "v", "exat", &past]);
        assert_eq!(h.store.len(), 0);
    }

    #[test]
    fn getex_past_absolute_time_deletes_after_answering() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        let past = (T0 / 1000 - 1).to_string();
        assert_eq!(h.bulk(&["getex", "k", "exat", &past]), Some("v".into()));
        assert!(!h.store.exists(b"k"));
        h.ok(&["set", "k", "v"]);
        assert_eq!(
            h.bulk(&["getex", "k", "pxat", &T0.to_string()]),
            Some("v".into())
        );
        assert!(!h.store.exists(b"k"));
    }

    #[test]
    fn getex_errors() {
        let mut h = Harness::new();
        // On a missing key the time is never looked at.
        assert_eq!(h.bulk(&["getex", "missing", "ex", "abc"]), None);
        assert_eq!(h.bulk(&["getex", "missing", "ex", "0"]), None);
        assert_eq!(h.error(&["getex", "missing", "foo"]), SYNTAX);
        h.ok(&["set", "k", "v"]);
        for args in [
            &["getex", "k", "nx"][..],
            &["getex", "k", "get"],
            &["getex", "k", "keepttl"],
            &["getex", "k", "ex"],
            &["getex", "k", "ex", "1", "px", "1"],
            &["getex", "k", "persist", "ex", "1"],
            &["getex", "k", "ex", "1", "persist"],
        ] {
            assert_eq!(h.error(args), SYNTAX, "{args:?}");
        }
        assert_eq!(
            h.error(&["getex", "k", "ex", "0"]),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(h.error(&["getex", "k", "px", "x"]), NOT_INT);
        assert_eq!(h.expire_of("k"), None);
    }

    #[test]
    fn counters() {
        let mut h = Harness::new();
        assert_eq!(h.int(&["incr", "n"]), 1);
        assert_eq!(h.int(&["incrby", "n", "10"]), 11);
        assert_eq!(h.int(&["decr", "n"]), 10);
        assert_eq!(h.int(&["decrby", "n", "15"]), -5);
        assert_eq!(h.int(&["incrby", "n", "-5"]), -10);
        assert_eq!(h.int(&["decrby", "n", "-10"]), 0);
        assert_eq!(h.value("n"), Some(b"0".to_vec()));
        assert_eq!(h.int(&["decr", "m"]), -1);
        assert_eq!(h.value("m"), Some(b"-1".to_vec()));
    }

    #[test]
    fn counters_refuse_non_integers() {
        let mut h = Harness::new();
        for v in [
            "abc",
            " 1",
            "1 ",
            "01",
            "+1",
            "-0",
            "1.0",
            "",
            "9223372036854775808",
            "-9223372036854775809",
            "000000000000000000001",
        ] {
            h.ok(&["set", "k", v]);
            for cmd in [&["incr", "k"][..], &["decr", "k"], &["incrby", "k", "1"]] {
                assert_eq!(h.error(cmd), NOT_INT, "{v:?} {cmd:?}");
            }
            assert_eq!(h.value("k"), Some(v.as_bytes().to_vec()));
        }
        h.ok(&["set", "k", "1"]);
        assert_eq!(h.error(&["incrby", "k", "x"]), NOT_INT);
        assert_eq!(h.error(&["decrby", "k", "1e3"]), NOT_INT);
        // The argument is checked before the key.
        h.ok(&["set", "k", "abc"]);
        assert_eq!(h.error(&["incrby", "k", "z"]), NOT_INT);
    }

    #[test]
    fn counter_overflow_edges() {
        let mut h = Harness::new();
        let overflow = "ERR increment or decrement would overflow";
        h.ok(&["set", "k", "9223372036854775806"]);
        assert_eq!(h.int(&["incr", "k"]), i64::MAX);
        assert_eq!(h.error(&["incr", "k"]), overflow);
        assert_eq!(h.error(&["incrby", "k", "1"]), overflow);
        assert_eq!(h.int(&["incrby", "k", "-9223372036854775807"]), 0);
        h.ok(&["set", "k", "-9223372036854775807"]);
        assert_eq!(h.int(&["decr", "k"]), i64::MIN);
        assert_eq!(h.error(&["decr", "k"]), overflow);
        assert_eq!(h.value("k"), Some(b"-9223372036854775808".to_vec()));
        assert_eq!(h.error(&["decrby", "k", "1"]), overflow);
        // -i64::MIN does not exist: Redis has its own message for it.
        h.ok(&["set", "k", "0"]);
        assert_eq!(
            h.error(&["decrby", "k", "-9223372036854775808"]),
            "ERR decrement would overflow"
        );
        assert_eq!(h.int(&["incrby", "k", "-9223372036854775808"]), i64::MIN);
    }

    #[test]
    fn counters_keep_the_ttl() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "5", "ex", "100"]);
        h.advance(1000);
        assert_eq!(h.int(&["incr", "k"]), 6);
        assert_eq!(h.int(&["decrby", "k", "2"]), 4);
        assert_eq!(h.expire_of("k"), Some(T0 + 100_000));
        assert_eq!(h.bulk(&["incrbyfloat", "k", "0.5"]), Some("4.5".into()));
        assert_eq!(h.expire_of("k"), Some(T0 + 100_000));
    }

    #[test]
    fn incrbyfloat() {
        let mut h = Harness::new();
        assert_eq!(h.bulk(&["incrbyfloat", "f", "0.1"]), Some("0.1".into()));
        assert_eq!(h.bulk(&["incrbyfloat", "f", "0.2"]), Some("0.3".into()));
        assert_eq!(h.value("f"), Some(b"0.3".to_vec()));
        h.ok(&["set", "f", "10.50"]);
        assert_eq!(h.bulk(&["incrbyfloat", "f", "0.1"]), Some("10.6".into()));
        assert_eq!(h.bulk(&["incrbyfloat", "f", "-5"]), Some("5.6".into()));
        h.ok(&["set", "f", "5.0e3"]);
        assert_eq!(h.bulk(&["incrbyfloat", "f", "2.0e2"]), Some("5200".into()));
        h.ok(&["set", "f", "1000"]);
        assert_eq!(
            h.bulk(&["incrbyfloat", "f", "0.1"]),
            Some("1000.09999999999999998".into())
        );
        h.ok(&["set", "f", "17179869184"]);
        assert_eq!(
            h.bulk(&["incrbyfloat", "f", "1.5"]),
            Some("17179869185.5".into())
        );
        h.ok(&["set", "f", "1"]);
        assert_eq!(h.bulk(&["incrbyfloat", "f", "-1"]), Some("0".into()));
    }

    #[test]
    fn incrbyfloat_errors() {
        let mut h = Harness::new();
        let bad = "ERR value is not a valid float";
        for v in [" 11", "11 ", "abc", "1e", "nan", "", "1e5000"] {
            h.ok(&["set", "f", v]);
            assert_eq!(h.error(&["incrbyfloat", "f", "1"]), bad, "{v:?}");
            assert_eq!(h.value("f"), Some(v.as_bytes().to_vec()));
        }
        assert_eq!(
            h.run_bytes(&[b"set", b"f", b"1\x002"]).0,
            Reply::ok(),
            "setup"
        );
        assert_eq!(
            h.run_bytes(&[b"incrbyfloat", b"f", b"1"]).0,
            Reply::error(bad)
        );
        h.ok(&["set", "f", "0"]);
        assert_eq!(h.error(&["incrbyfloat", "f", "x"]), bad);
        assert_eq!(h.error(&["incrbyfloat", "f", " 1"]), bad);
        let inf = "ERR increment would produce NaN or Infinity";
        assert_eq!(h.error(&["incrbyfloat", "f", "+inf"]), inf);
        assert_eq!(h.error(&["incrbyfloat", "f", "-Infinity"]), inf);
        h.ok(&["set", "f", "1.18e4932"]);
        assert_eq!(h.error(&["incrbyfloat", "f", "1.18e4932"]), inf);
        assert_eq!(h.value("f"), Some(b"1.18e4932".to_vec()));
        h.ok(&["set", "f", "inf"]);
        assert_eq!(h.error(&["incrbyfloat", "f", "-inf"]), inf);
    }

    #[test]
    fn append_and_strlen() {
        let mut h = Harness::new();
        assert_eq!(h.int(&["strlen", "k"]), 0);
        assert_eq!(h.int(&["append", "k", "Hello"]), 5);
        assert_eq!(h.int(&["append", "k", " World"]), 11);
        assert_eq!(h.int(&["append", "k", ""]), 11);
        assert_eq!(h.value("k"), Some(b"Hello World".to_vec()));
        assert_eq!(h.int(&["strlen", "k"]), 11);
        assert_eq!(h.int(&["append", "e", ""]), 0);
        assert!(h.store.exists(b"e"));
    }

    #[test]
    fn append_keeps_ttl_and_respects_limits() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "abc", "px", "5000"]);
        assert_eq!(h.int(&["append", "k", "def"]), 6);
        assert_eq!(h.expire_of("k"), Some(T0 + 5000));
        h.proto_max_bulk_len = 8;
        assert_eq!(h.int(&["append", "k", "gh"]), 8);
        assert_eq!(
            h.error(&["append", "k", "i"]),
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
        );
        assert_eq!(h.value("k"), Some(b"abcdefgh".to_vec()));
    }

    #[test]
    fn engine_value_limit_is_reported_with_its_message() {
        let mut h = Harness::with_options(Options {
            max_value_len: 10,
            ..Options::default()
        });
        let e = "ERR value is 11 bytes, over the limit of 10 (limits.max_value_len)";
        assert_eq!(h.error(&["set", "k", "12345678901"]), e);
        h.ok(&["set", "k", "1234567890"]);
        assert_eq!(h.error(&["append", "k", "1"]), e);
        assert_eq!(
            h.error(&["setrange", "k", "1000000", "x"]),
            "ERR value is 1000001 bytes, over the limit of 10 (limits.max_value_len)"
        );
        assert_eq!(h.value("k"), Some(b"1234567890".to_vec()));
    }

    #[test]
    fn getrange_follows_redis_index_rules() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "Hello World"]);
        // Expected values checked against redis-server 7.0.
        for (start, end, want) in [
            ("0", "4", "Hello"),
            ("-5", "-1", "World"),
            ("-1", "-5", ""),
            ("5", "3", ""),
            ("0", "-1", "Hello World"),
            ("0", "100", "Hello World"),
            ("100", "200", ""),
            ("-100", "-50", "H"),
            ("-100", "100", "Hello World"),
            ("-9223372036854775808", "9223372036854775807", "Hello World"),
            ("11", "11", ""),
            ("10", "10", "d"),
            ("-1", "-1", "d"),
            ("3", "-100", ""),
        ] {
            assert_eq!(
                h.bulk(&["getrange", "k", start, end]),
                Some(want.into()),
                "{start} {end}"
            );
            assert_eq!(h.bulk(&["SUBSTR", "k", start, end]), Some(want.into()));
        }
        assert_eq!(h.bulk(&["getrange", "missing", "0", "-1"]), Some("".into()));
        h.ok(&["set", "e", ""]);
        assert_eq!(h.bulk(&["getrange", "e", "0", "-1"]), Some("".into()));
        assert_eq!(h.bulk(&["getrange", "e", "-1", "0"]), Some("".into()));
        // Indexes are parsed before the key is looked at.
        assert_eq!(h.error(&["getrange", "missing", "a", "1"]), NOT_INT);
        assert_eq!(h.error(&["getrange", "k", "0", "1.5"]), NOT_INT);
    }

    #[test]
    fn setrange() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "Hello World"]);
        assert_eq!(h.int(&["setrange", "k", "6", "Redis"]), 11);
        assert_eq!(h.value("k"), Some(b"Hello Redis".to_vec()));
        assert_eq!(h.int(&["setrange", "k", "13", "!"]), 14);
        assert_eq!(h.value("k"), Some(b"Hello Redis\0\0!".to_vec()));
        assert_eq!(h.int(&["setrange", "p", "3", "ab"]), 5);
        assert_eq!(h.value("p"), Some(b"\0\0\0ab".to_vec()));
        assert_eq!(h.int(&["setrange", "p", "0", "xyz"]), 5);
        assert_eq!(h.value("p"), Some(b"xyzab".to_vec()));
    }

    #[test]
    fn setrange_with_nothing_to_write() {
        let mut h = Harness::new();
        let (r, e) = h.run_bytes(&[b"setrange", b"missing", b"5", b""]);
        assert_eq!((r, e), (Reply::Integer(0), Effect::Read));
        assert!(!h.store.exists(b"missing"));
        h.ok(&["set", "k", "abc"]);
        // An existing key answers its length, whatever the offset.
        h.proto_max_bulk_len = 10;
        assert_eq!(h.int(&["setrange", "k", "1000", ""]), 3);
        assert_eq!(h.value("k"), Some(b"abc".to_vec()));
    }

    #[test]
    fn setrange_errors() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "abc"]);
        assert_eq!(
            h.error(&["setrange", "k", "-1", "x"]),
            "ERR offset is out of range"
        );
        assert_eq!(
            h.error(&["setrange", "k", "-1", ""]),
            "ERR offset is out of range"
        );
        assert_eq!(h.error(&["setrange", "k", "x", "x"]), NOT_INT);
        h.proto_max_bulk_len = 100;
        let too_long = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
        assert_eq!(h.error(&["setrange", "k", "99", "ab"]), too_long);
        assert_eq!(h.error(&["setrange", "new", "99", "ab"]), too_long);
        assert_eq!(
            h.error(&["setrange", "k", "9223372036854775807", "ab"]),
            too_long
        );
        assert_eq!(h.int(&["setrange", "k", "98", "ab"]), 100);
        assert!(!h.store.exists(b"new"));
    }

    #[test]
    fn setrange_keeps_ttl() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "abc", "ex", "50"]);
        assert_eq!(h.int(&["setrange", "k", "1", "X"]), 3);
        assert_eq!(h.expire_of("k"), Some(T0 + 50_000));
        assert_eq!(h.value("k"), Some(b"aXc".to_vec()));
    }

    #[test]
    fn expired_keys_behave_as_missing() {
        let mut h = Harness::new();
        for k in ["a", "b", "c", "d", "e", "f", "g"] {
            h.ok(&["set", k, "10", "px", "100"]);
        }
        h.advance(100);
        assert_eq!(h.bulk(&["get", "a"]), None);
        assert_eq!(h.int(&["incr", "b"]), 1);
        assert_eq!(h.expire_of("b"), None);
        assert_eq!(h.int(&["append", "c", "x"]), 1);
        assert_eq!(h.expire_of("c"), None);
        assert_eq!(h.int(&["strlen", "d"]), 0);
        assert_eq!(h.int(&["setnx", "e", "v"]), 1);
        assert_eq!(h.run(&["set", "f", "v", "xx"]), Reply::Null);
        assert_eq!(h.bulk(&["getdel", "g"]), None);
        assert_eq!(h.bulk(&["getrange", "g", "0", "-1"]), Some("".into()));
    }

    #[test]
    fn wrong_arity_is_an_error_not_a_panic() {
        let mut h = Harness::new();
        let ctx = h.ctx();
        let spec = super::super::lookup(b"set").unwrap();
        let mut out = Vec::new();
        let effect = super::super::exec_keyed(spec, &[b"set", b"k"], &mut h.store, &ctx, &mut out);
        assert_eq!(effect, Effect::Read);
        assert_eq!(out, b"-ERR wrong number of arguments for 'set' command\r\n");
        out.clear();
        let spec = super::super::lookup(b"get").unwrap();
        super::super::exec_keyed(spec, &[b"get"], &mut h.store, &ctx, &mut out);
        assert_eq!(out, b"-ERR wrong number of arguments for 'get' command\r\n");
    }

    #[test]
    fn non_keyed_spec_is_an_error_not_a_panic() {
        let mut h = Harness::new();
        let ctx = h.ctx();
        let spec = super::super::lookup(b"mget").unwrap();
        let mut out = Vec::new();
        super::super::exec_keyed(spec, &[b"mget", b"k"], &mut h.store, &ctx, &mut out);
        assert!(out.starts_with(b"-ERR internal error"), "{out:?}");
    }
}
