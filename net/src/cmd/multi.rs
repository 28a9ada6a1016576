//! The part of a multi-key command (MGET, MSET, MSETNX, DEL, UNLINK, EXISTS) that one store
//! runs: the server splits the keys by owning store, calls these, and merges the results.
//!
//! Functions that write return `Err` with the full error text (no leading `-`) on a storage
//! error; writes made before it stay in the log, so the caller should judge whether anything
//! was written by the store's `log_end`, not by the result.
use simplekv_engine::Store;

use super::ExecCtx;
use crate::resp::{write_bulk, write_error, write_null};

/// MGET part: for each key, one encoded reply element (bulk or null) pushed to `out`, in order.
/// A key whose value cannot be read gets an error element.
pub fn mget_part(store: &Store, keys: &[&[u8]], _ctx: &ExecCtx, out: &mut Vec<Vec<u8>>) {
    for key in keys {
        let mut item = Vec::new();
        match store.get_with(key, |v| write_bulk(&mut item, v)) {
            Ok(Some(())) => {}
            Ok(None) => write_null(&mut item),
            Err(e) => write_error(&mut item, format!("ERR {e}").as_bytes()),
        }
        out.push(item);
    }
}

/// DEL/UNLINK part: how many of the keys existed and were deleted. A key listed twice counts
/// once, as in Redis: the second delete finds nothing.
pub fn del_part(store: &mut Store, keys: &[&[u8]]) -> Result<i64, String> {
    // Room for every tombstone first: a full disk fails the whole command, not its tail.
    let present: Vec<&[u8]> = keys.iter().copied().filter(|k| store.exists(k)).collect();
    store
        .make_room_for(&[], &present)
        .map_err(|e| format!("ERR {e}"))?;
    let mut deleted = 0;
    for key in keys {
        if store.delete(key).map_err(|e| format!("ERR {e}"))? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// EXISTS part: counts duplicates (`EXISTS a a` is 2 when `a` exists), as Redis does.
pub fn exists_part(store: &Store, keys: &[&[u8]], _ctx: &ExecCtx) -> i64 {
    keys.iter().filter(|k| store.exists(k)).count() as i64
}

/// MSET part: sets every pair in order (a later duplicate wins), clearing any TTL like SET.
pub fn mset_part(store: &mut Store, pairs: &[(&[u8], &[u8])]) -> Result<(), String> {
    // Room for every record first: a full disk fails the whole command, not its tail.
    store
        .make_room_for(pairs, &[])
        .map_err(|e| format!("ERR {e}"))?;
    for (key, value) in pairs {
        store
            .put(key, value, None)
            .map_err(|e| format!("ERR {e}"))?;
    }
    Ok(())
}

/// MSETNX on one store: sets all pairs only if none of the keys exists; 1 if it did, else 0.
pub fn msetnx_part(store: &mut Store, pairs: &[(&[u8], &[u8])]) -> Result<i64, String> {
    if pairs.iter().any(|(k, _)| store.exists(k)) {
        return Ok(0);
    }
    mset_part(store, pairs)?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use simplekv_engine::Options;

    use super::*;
    use crate::cmd::testutil::{Harness, T0};
    use crate::resp::{Reply, parse_reply};

    fn decode(item: &[u8]) -> Reply {
        let (r, used) = parse_reply(item).unwrap().unwrap();
        assert_eq!(used, item.len());
        r
    }

    #[test]
    fn mget_in_order_with_nulls() {
        let mut h = Harness::new();
        h.store.put(b"a", b"1", None).unwrap();
        h.store.put(b"b\0", b"\r\n", None).unwrap();
        h.store.put(b"gone", b"x", Some(T0 + 10)).unwrap();
        h.advance(10);
        let mut out = vec![b"previous".to_vec()];
        let keys: [&[u8]; 5] = [b"b\0", b"missing", b"a", b"gone", b"a"];
        mget_part(&h.store, &keys, &h.ctx(), &mut out);
        assert_eq!(out.len(), 6, "appends after what was there");
        let got: Vec<Reply> = out[1..].iter().map(|i| decode(i)).collect();
        assert_eq!(
            got,
            [
                Reply::bulk("\r\n"),
                Reply::Null,
                Reply::bulk("1"),
                Reply::Null,
                Reply::bulk("1")
            ]
        );
    }

    #[test]
    fn del_counts_each_existing_key_once() {
        let mut h = Harness::new();
        for k in [&b"a"[..], b"b", b"c"] {
            h.store.put(k, b"v", None).unwrap();
        }
        let keys: [&[u8]; 5] = [b"a", b"a", b"missing", b"b", b"b"];
        assert_eq!(del_part(&mut h.store, &keys), Ok(2));
        assert!(!h.store.exists(b"a") && !h.store.exists(b"b"));
        assert!(h.store.exists(b"c"));
        assert_eq!(del_part(&mut h.store, &[b"a"]), Ok(0));
    }

    #[test]
    fn del_of_an_expired_key_counts_zero_but_removes_it() {
        let mut h = Harness::new();
        h.store.put(b"e", b"v", Some(T0 + 1)).unwrap();
        h.advance(1);
        let end = h.store.log_end();
        assert_eq!(del_part(&mut h.store, &[b"e"]), Ok(0));
        assert_eq!(h.store.log_end(), end + 1, "tombstone written");
        assert_eq!(h.store.len(), 0);
    }

    #[test]
    fn exists_counts_duplicates_and_skips_expired() {
        let mut h = Harness::new();
        h.store.put(b"a", b"", None).unwrap();
        h.store.put(b"e", b"v", Some(T0 + 5)).unwrap();
        let keys: [&[u8]; 4] = [b"a", b"a", b"e", b"x"];
        assert_eq!(exists_part(&h.store, &keys, &h.ctx()), 3);
        h.advance(5);
        assert_eq!(exists_part(&h.store, &keys, &h.ctx()), 2);
        assert_eq!(exists_part(&h.store, &[], &h.ctx()), 0);
    }

    #[test]
    fn mset_sets_all_and_clears_ttls() {
        let mut h = Harness::new();
        h.store.put(b"a", b"old", Some(T0 + 1000)).unwrap();
        let pairs: [(&[u8], &[u8]); 3] = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")];
        assert_eq!(mset_part(&mut h.store, &pairs), Ok(()));
        assert_eq!(h.value("a"), Some(b"3".to_vec()), "a later duplicate wins");
        assert_eq!(h.value("b"), Some(b"2".to_vec()));
        assert_eq!(h.expire_of("a"), None);
    }

    #[test]
    fn mset_reports_engine_errors() {
        let mut h = Harness::with_options(Options {
            max_key_len: 4,
            ..Options::default()
        });
        let pairs: [(&[u8], &[u8]); 2] = [(b"ok", b"1"), (b"too-long", b"2")];
        assert_eq!(
            mset_part(&mut h.store, &pairs),
            Err("ERR key is 8 bytes, over the limit of 4 (limits.max_key_len)".to_string())
        );
        assert_eq!(
            msetnx_part(&mut h.store, &[(b"long-key", b"v")]),
            Err("ERR key is 8 bytes, over the limit of 4 (limits.max_key_len)".to_string())
        );
    }

    #[test]
    fn msetnx_all_or_nothing() {
        let mut h = Harness::new();
        h.store.put(b"b", b"x", None).unwrap();
        let end = h.store.log_end();
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"2")];
        assert_eq!(msetnx_part(&mut h.store, &pairs), Ok(0));
        assert_eq!(h.store.log_end(), end, "nothing written");
        assert_eq!(h.value("a"), None);
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"c", b"2")];
        assert_eq!(msetnx_part(&mut h.store, &pairs), Ok(1));
        assert_eq!(h.value("a"), Some(b"1".to_vec()));
        assert_eq!(h.value("c"), Some(b"2".to_vec()));
    }

    #[test]
    fn msetnx_treats_expired_keys_as_absent() {
        let mut h = Harness::new();
        h.store.put(b"a", b"old", Some(T0 + 1)).unwrap();
        h.advance(1);
        assert_eq!(msetnx_part(&mut h.store, &[(b"a", b"new")]), Ok(1));
        assert_eq!(h.value("a"), Some(b"new".to_vec()));
    }
}
