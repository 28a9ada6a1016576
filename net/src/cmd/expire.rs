//! Key expiry and inspection: EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, TTL/PTTL,
//! EXPIRETIME/PEXPIRETIME, PERSIST, TYPE, as in Redis 7.0's `expire.c`.
use simplekv_engine::Store;

use super::{CommandSpec, ErrText, ExecCtx, err, invalid_expire, parse_i64, storage_err};
use crate::resp::{write_integer, write_simple};

const NX: u8 = 1 << 0;
const XX: u8 = 1 << 1;
const GT: u8 = 1 << 2;
const LT: u8 = 1 << 3;

type Res = Result<(), ErrText>;

pub(crate) fn exec(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Res {
    let key = args[1];
    match spec.name {
        "expire" => expire(spec, args, store, ctx, true, true, out),
        "pexpire" => expire(spec, args, store, ctx, true, false, out),
        "expireat" => expire(spec, args, store, ctx, false, true, out),
        "pexpireat" => expire(spec, args, store, ctx, false, false, out),
        "ttl" => ttl(store, key, ctx, false, false, out),
        "pttl" => ttl(store, key, ctx, true, false, out),
        "expiretime" => ttl(store, key, ctx, false, true, out),
        "pexpiretime" => ttl(store, key, ctx, true, true, out),
        "persist" => {
            let has_ttl = store.meta(key).is_some_and(|m| m.expire.is_some());
            if has_ttl {
                store.set_expire(key, None).map_err(storage_err)?;
            }
            write_integer(out, has_ttl.into());
            Ok(())
        }
        "type" => {
            write_simple(
                out,
                if store.exists(key) {
                    b"string"
                } else {
                    b"none"
                },
            );
            Ok(())
        }
        _ => Err(format!(
            "ERR internal error: '{}' has no single-key implementation",
            spec.name
        )
        .into_bytes()
        .into()),
    }
}

/// parseExtendedExpireArgumentsOrReply: NX/XX/GT/LT after the time, any case, repeatable.
fn parse_flags(args: &[&[u8]]) -> Result<u8, ErrText> {
    let mut flags = 0;
    for &opt in args.iter().skip(3) {
        let flag = [(b"nx", NX), (b"xx", XX), (b"gt", GT), (b"lt", LT)]
            .into_iter()
            .find(|(name, _)| opt.eq_ignore_ascii_case(&name[..]))
            .map(|(_, f)| f);
        match flag {
            Some(f) => flags |= f,
            None => {
                let mut text = b"ERR Unsupported option ".to_vec();
                text.extend_from_slice(opt);
                return Err(text.into());
            }
        }
    }
    if flags & NX != 0 && flags & (XX | GT | LT) != 0 {
        return Err(err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if flags & GT != 0 && flags & LT != 0 {
        return Err(err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(flags)
}

/// expireGenericCommand. `relative`: the time counts from now (EXPIRE, PEXPIRE).
fn expire(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    relative: bool,
    seconds: bool,
    out: &mut Vec<u8>,
) -> Res {
    let key = args[1];
    let flags = parse_flags(args)?;
    let mut when = parse_i64(args.get(2).copied().unwrap_or_default())?;
    // Negative times are allowed (they delete the key); only overflow is an error.
    if seconds {
        when = when.checked_mul(1000).ok_or_else(|| invalid_expire(spec))?;
    }
    // One reading of the clock for the whole command.
    let now = i64::try_from(ctx.now_ms()).unwrap_or(i64::MAX);
    if relative {
        when = when.checked_add(now).ok_or_else(|| invalid_expire(spec))?;
    }
    let Some(meta) = store.meta(key) else {
        write_integer(out, 0);
        return Ok(());
    };
    let current = meta.expire.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
    let refused = match current {
        // No TTL counts as an infinite one: GT never beats it, LT always does.
        None => flags & (XX | GT) != 0,
        Some(cur) => {
            flags & NX != 0 || (flags & GT != 0 && when <= cur) || (flags & LT != 0 && when >= cur)
        }
    };
    if refused {
        write_integer(out, 0);
        return Ok(());
    }
    if when <= now {
        // A time already past deletes the key, and the tombstone goes to the log (and to
        // followers), as Redis propagates a DEL.
        store.delete(key).map_err(storage_err)?;
    } else {
        store
            .set_expire(key, Some(when.unsigned_abs()))
            .map_err(storage_err)?;
    }
    write_integer(out, 1);
    Ok(())
}

/// ttlGenericCommand: -2 for a missing key, -1 for no expiry, else the time left (or the
/// expiry itself for the *TIME variants), in seconds rounded to nearest or in ms.
fn ttl(
    store: &Store,
    key: &[u8],
    ctx: &ExecCtx,
    ms: bool,
    absolute: bool,
    out: &mut Vec<u8>,
) -> Res {
    let Some(meta) = store.meta(key) else {
        write_integer(out, -2);
        return Ok(());
    };
    let Some(expire) = meta.expire else {
        write_integer(out, -1);
        return Ok(());
    };
    let expire = i128::from(expire);
    let t = if absolute {
        expire
    } else {
        expire - i128::from(ctx.now_ms())
    }
    .max(0);
    let t = if ms { t } else { (t + 500) / 1000 };
    write_integer(out, i64::try_from(t).unwrap_or(i64::MAX));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Effect;
    use super::super::testutil::{Harness, T0, fake_clock};
    use crate::resp::Reply;

    const NOT_INT: &str = "ERR value is not an integer or out of range";

    #[test]
    fn expire_variants_set_absolute_ms() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        assert_eq!(h.int(&["expire", "k", "10"]), 1);
        assert_eq!(h.expire_of("k"), Some(T0 + 10_000));
        assert_eq!(h.int(&["PEXPIRE", "k", "10"]), 1);
        assert_eq!(h.expire_of("k"), Some(T0 + 10));
        assert_eq!(h.int(&["expireat", "k", "1800000000"]), 1);
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_000));
        assert_eq!(h.int(&["pexpireat", "k", "1800000000555"]), 1);
        assert_eq!(h.expire_of("k"), Some(1_800_000_000_555));
        assert_eq!(h.value("k"), Some(b"v".to_vec()));
    }

    #[test]
    fn expire_on_missing_key() {
        let mut h = Harness::new();
        let (r, e) = h.run_bytes(&[b"expire", b"nope", b"10"]);
        assert_eq!((r, e), (Reply::Integer(0), Effect::Read));
        // A past time on a missing key deletes nothing and answers 0.
        assert_eq!(h.int(&["pexpireat", "nope", "1"]), 0);
    }

    #[test]
    fn a_past_time_deletes_with_a_tombstone() {
        let mut h = Harness::new();
        for (cmd, t) in [
            ("expire", "0"),
            ("expire", "-10"),
            ("pexpire", "-1"),
            ("expireat", "1"),
            ("pexpireat", &T0.to_string()[..]),
        ] {
            h.ok(&["set", "k", "v"]);
            let end = h.store.log_end();
            let (r, e) = h.run_bytes(&[cmd.as_bytes(), b"k", t.as_bytes()]);
            assert_eq!((r, e), (Reply::Integer(1), Effect::Wrote), "{cmd} {t}");
            assert!(!h.store.exists(b"k"));
            // The deletion is a record of its own, so followers and recovery see it.
            assert_eq!(h.store.log_end(), end + 1);
            assert_eq!(h.store.len(), 0, "{cmd} {t}: key left in the keydir");
        }
    }

    #[test]
    fn expired_key_is_missing() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v", "px", "100"]);
        assert_eq!(h.int(&["pttl", "k"]), 100);
        h.advance(99);
        assert_eq!(h.int(&["pttl", "k"]), 1);
        h.advance(1);
        assert_eq!(h.int(&["pttl", "k"]), -2);
        assert_eq!(h.int(&["expire", "k", "100"]), 0);
        assert_eq!(h.int(&["persist", "k"]), 0);
        assert_eq!(h.run(&["type", "k"]), Reply::Simple(b"none".to_vec()));
    }

    #[test]
    fn nx_xx_gt_lt() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        // No TTL: XX and GT refuse (no TTL counts as infinite), NX and LT accept.
        assert_eq!(h.int(&["expire", "k", "100", "xx"]), 0);
        assert_eq!(h.int(&["expire", "k", "100", "GT"]), 0);
        assert_eq!(h.expire_of("k"), None);
        assert_eq!(h.int(&["expire", "k", "100", "lt"]), 1);
        assert_eq!(h.expire_of("k"), Some(T0 + 100_000));
        h.ok(&["set", "k", "v"]);
        assert_eq!(h.int(&["expire", "k", "100", "nx"]), 1);
        // With a TTL.
        assert_eq!(h.int(&["expire", "k", "200", "NX"]), 0);
        assert_eq!(h.int(&["expire", "k", "200", "xx"]), 1);
        assert_eq!(h.expire_of("k"), Some(T0 + 200_000));
        assert_eq!(h.int(&["expire", "k", "200", "gt"]), 0);
        assert_eq!(h.int(&["expire", "k", "201", "gt"]), 1);
        assert_eq!(h.int(&["expire", "k", "201", "lt"]), 0);
        assert_eq!(h.int(&["expire", "k", "150", "lt"]), 1);
        assert_eq!(h.int(&["pexpire", "k", "150000", "xx", "gt"]), 0);
        assert_eq!(h.int(&["pexpire", "k", "150001", "xx", "gt"]), 1);
        assert_eq!(h.expire_of("k"), Some(T0 + 150_001));
        // Flags repeat freely.
        assert_eq!(h.int(&["pexpire", "k", "1", "lt", "lt"]), 1);
    }

    #[test]
    fn option_errors() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        let nx = "ERR NX and XX, GT or LT options at the same time are not compatible";
        let gtlt = "ERR GT and LT options at the same time are not compatible";
        for (args, want) in [
            (&["expire", "k", "10", "nx", "xx"][..], nx),
            (&["expire", "k", "10", "gt", "nx"], nx),
            (&["expire", "k", "10", "nx", "lt"], nx),
            (&["expire", "k", "10", "gt", "lt"], gtlt),
            (&["pexpireat", "k", "10", "LT", "GT"], gtlt),
            // Options are parsed before the time, and all of them before the
            // compatibility checks.
            (&["expire", "k", "abc", "foo"], "ERR Unsupported option foo"),
            (
                &["expire", "k", "10", "nx", "xx", "Bar"],
                "ERR Unsupported option Bar",
            ),
            (&["expire", "k", "abc", "nx", "xx"], nx),
            (&["expire", "k", "abc"], NOT_INT),
            (&["expire", "k", "1.5"], NOT_INT),
        ] {
            assert_eq!(h.error(args), want, "{args:?}");
        }
        assert_eq!(h.expire_of("k"), None);
        assert!(h.store.exists(b"k"));
    }

    #[test]
    fn overflowing_times() {
        let mut h = Harness::new();
        h.ok(&["set", "k", "v"]);
        for (cmd, t) in [
            ("expire", "9223372036854775807"),
            ("expire", "9223372036854775"),
            ("expire", "-9223372036854776"),
            ("expireat", "9223372036854776"),
            ("pexpire", "9223372036854775807"),
        ] {
            assert_eq!(
                h.error(&[cmd, "k", t]),
                format!("ERR invalid expire time in '{cmd}' command")
            );
        }
        // The largest representable times are fine.
        assert_eq!(h.int(&["pexpireat", "k", "9223372036854775807"]), 1);
        assert_eq!(h.expire_of("k"), Some(i64::MAX as u64));
        assert_eq!(h.int(&["expireat", "k", "9223372036854775"]), 1);
        assert_eq!(h.int(&["expire", "k", "-9223372036854775"]), 1);
        assert!(!h.store.exists(b"k"));
    }

    #[test]
    fn ttl_family() {
        let mut h = Harness::new();
        for cmd in ["ttl", "pttl", "expiretime", "pexpiretime"] {
            assert_eq!(h.int(&[cmd, "missing"]), -2);
        }
        h.ok(&["set", "k", "v"]);
        for cmd in ["ttl", "pttl", "expiretime", "pexpiretime"] {
            assert_eq!(h.int(&[cmd, "k"]), -1);
        }
        h.ok(&["set", "k", "v", "pxat", &(T0 + 10_499).to_string()]);
        assert_eq!(h.int(&["ttl", "k"]), 10);
        assert_eq!(h.int(&["pttl", "k"]), 10_499);
        assert_eq!(
            h.int(&["expiretime", "k"]),
            ((T0 + 10_499 + 500) / 1000) as i64
        );
        assert_eq!(h.int(&["pexpiretime", "k"]), (T0 + 10_499) as i64);
        // TTL rounds to the nearest second, as Redis: 10.5 s left reads 11.
        h.ok(&["set", "k", "v", "pxat", &(T0 + 10_500).to_string()]);
        assert_eq!(h.int(&["ttl", "k"]), 11);
        assert_eq!(h.int(&["expiretime", "k"]), ((T0 + 11_000) / 1000) as i64);
        h.ok(&["set", "k", "v", "px", "1"]);
        assert_eq!(h.int(&["ttl", "k"]), 0);
        assert_eq!(h.int(&["pttl", "k"]), 1);
        h.ok(&["set", "k", "v", "pxat", "9223372036854775807"]);
        assert_eq!(h.int(&["pexpiretime", "k"]), i64::MAX);
        assert_eq!(h.int(&["expiretime", "k"]), 9_223_372_036_854_776);
    }

    #[test]
    fn persist() {
        let mut h = Harness::new();
        assert_eq!(h.int(&["persist", "missing"]), 0);
        h.ok(&["set", "k", "v"]);
        let (r, e) = h.run_bytes(&[b"persist", b"k"]);
        assert_eq!((r, e), (Reply::Integer(0), Effect::Read));
        h.ok(&["set", "k", "v", "ex", "10"]);
        let (r, e) = h.run_bytes(&[b"PERSIST", b"k"]);
        assert_eq!((r, e), (Reply::Integer(1), Effect::Wrote));
        assert_eq!(h.expire_of("k"), None);
        assert_eq!(h.int(&["ttl", "k"]), -1);
        h.advance(20_000);
        assert_eq!(h.value("k"), Some(b"v".to_vec()));
    }

    #[test]
    fn type_command() {
        let mut h = Harness::new();
        assert_eq!(h.run(&["type", "k"]), Reply::Simple(b"none".to_vec()));
        h.ok(&["set", "k", ""]);
        assert_eq!(h.run(&["TYPE", "k"]), Reply::Simple(b"string".to_vec()));
    }

    #[test]
    fn expiry_survives_reopen() {
        // The TTL must be in the log, not only in the keydir.
        let dir = tempfile::tempdir().unwrap();
        let opts = simplekv_engine::Options {
            clock: fake_clock,
            segment_size: 1 << 20,
            ..Default::default()
        };
        let ctx = super::super::ExecCtx {
            now_ms: Some(T0),
            proto_max_bulk_len: 1 << 20,
        };
        {
            let mut store = simplekv_engine::Store::open(dir.path(), opts.clone()).unwrap();
            let mut out = Vec::new();
            for args in [&[&b"set"[..], b"k", b"v"][..], &[b"expire", b"k", b"100"]] {
                let spec = super::super::lookup(args[0]).unwrap();
                super::super::exec_keyed(spec, args, &mut store, &ctx, &mut out);
            }
            assert_eq!(out, b"+OK\r\n:1\r\n");
            store.commit().unwrap();
        }
        let store = simplekv_engine::Store::open(dir.path(), opts).unwrap();
        assert_eq!(store.meta(b"k").and_then(|m| m.expire), Some(T0 + 100_000));
    }
}
