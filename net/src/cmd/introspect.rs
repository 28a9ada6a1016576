//! Key introspection: OBJECT ENCODING / REFCOUNT / IDLETIME / FREQ and MEMORY USAGE. The key
//! is `args[2]` (see [`super::key_of`]); the server answers the subcommands without a key
//! (HELP, MEMORY STATS...) itself.
//!
//! What they report, against Redis 7.0:
//! - ENCODING: the encoding Redis would give the value as it is now: `int` for a canonical
//!   64-bit integer of at most 20 characters, `embstr` up to 44 bytes, `raw` above. simplekv
//!   stores every value as bytes in its log; the answer tells clients that check it what kind
//!   of string they have.
//! - REFCOUNT: 1. Nothing is shared between keys (Redis shares small integers).
//! - IDLETIME and FREQ: access times and frequencies are not tracked (they would cost every
//!   keydir entry memory and every read a write); an error says so, as Redis does for the
//!   one its eviction policy does not track.
//! - MEMORY USAGE: the bytes of memory the key takes: its keydir entry, its share of the hash
//!   index and a long key's heap copy. The value is on disk and not counted.
use simplekv_engine::Store;

use super::{CommandSpec, ERR_SYNTAX, ErrText, err, parse_i64};
use crate::resp::{string2ll, write_bulk, write_integer, write_null};

const ERR_IDLETIME: &str = "ERR simplekv does not track key access times, idle time not tracked.";
const ERR_FREQ: &str =
    "ERR simplekv does not track key access frequencies, access frequency not tracked.";

/// Redis's encoding of a string value (`tryObjectEncoding` on a value just written).
pub fn string_encoding(v: &[u8]) -> &'static str {
    if v.len() <= 20 && string2ll(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// Runs `OBJECT <sub> key` or `MEMORY USAGE key [SAMPLES n]` (the caller checked the
/// subcommand's arity).
pub(crate) fn exec(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &Store,
    out: &mut Vec<u8>,
) -> Result<(), ErrText> {
    let sub = args[1].to_ascii_lowercase();
    let key = args[2];
    match (spec.name, sub.as_slice()) {
        ("memory", b"usage") => {
            // Redis checks the options before the key.
            let mut j = 3;
            while j < args.len() {
                if args[j].eq_ignore_ascii_case(b"samples") && j + 1 < args.len() {
                    if parse_i64(args[j + 1])? < 0 {
                        return Err(err(ERR_SYNTAX));
                    }
                    j += 2;
                } else {
                    return Err(err(ERR_SYNTAX));
                }
            }
            match store.memory_usage(key) {
                Some(n) => write_integer(out, n as i64),
                None => write_null(out),
            }
            Ok(())
        }
        ("object", b"encoding") => {
            let found = store
                .get_with(key, |v| write_bulk(out, string_encoding(v).as_bytes()))
                .map_err(super::storage_err)?;
            if found.is_none() {
                write_null(out);
            }
            Ok(())
        }
        ("object", sub @ (b"refcount" | b"idletime" | b"freq")) => {
            if !store.exists(key) {
                write_null(out);
                return Ok(());
            }
            match sub {
                b"refcount" => {
                    write_integer(out, 1);
                    Ok(())
                }
                b"idletime" => Err(err(ERR_IDLETIME)),
                _ => Err(err(ERR_FREQ)),
            }
        }
        _ => Err(format!(
            "ERR internal error: '{} {}' has no key to run on",
            spec.name,
            String::from_utf8_lossy(&sub)
        )
        .into_bytes()
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Harness;
    use super::*;
    use crate::resp::Reply;

    #[test]
    fn encodings_follow_the_value() {
        for (v, enc) in [
            ("12", "int"),
            ("-9223372036854775808", "int"),
            ("9223372036854775808", "embstr"),
            ("0123", "embstr"),
            ("-0", "embstr"),
            ("+1", "embstr"),
            ("", "embstr"),
            (&"x".repeat(44), "embstr"),
            (&"x".repeat(45), "raw"),
        ] {
            assert_eq!(string_encoding(v.as_bytes()), enc, "{v:?}");
        }
    }

    #[test]
    fn object_and_memory_usage_on_present_and_missing_keys() {
        let mut h = Harness::new();
        h.run(&["set", "k", "12"]);
        h.run(&["set", "long", &"v".repeat(100)]);
        assert_eq!(
            h.run(&["object", "encoding", "k"]),
            Reply::Bulk(b"int".to_vec())
        );
        assert_eq!(
            h.run(&["OBJECT", "ENCODING", "long"]),
            Reply::Bulk(b"raw".to_vec())
        );
        assert_eq!(h.run(&["object", "encoding", "nokey"]), Reply::Null);
        assert_eq!(h.int(&["object", "refcount", "k"]), 1);
        for sub in ["refcount", "idletime", "freq"] {
            assert_eq!(h.run(&["object", sub, "nokey"]), Reply::Null, "{sub}");
        }
        assert_eq!(
            h.run(&["object", "idletime", "k"]),
            Reply::Error(ERR_IDLETIME.into())
        );
        assert_eq!(
            h.run(&["object", "freq", "k"]),
            Reply::Error(ERR_FREQ.into())
        );

        // A key too long to be stored inline costs its bytes on top; the value costs nothing.
        let long_key = "k".repeat(1000);
        h.run(&["set", &long_key, "1"]);
        let short = h.int(&["memory", "usage", "k"]);
        assert!((48..200).contains(&short), "{short}");
        assert_eq!(h.int(&["memory", "usage", &long_key]), short + 1000);
        assert_eq!(h.int(&["memory", "usage", "long"]), short);
        h.run(&["expire", "k", "100"]);
        assert_eq!(h.int(&["memory", "usage", "k"]), short + 4);
        assert_eq!(
            h.int(&["memory", "usage", "long", "SAMPLES", "0", "samples", "5"]),
            short
        );
        assert_eq!(h.run(&["memory", "usage", "nokey"]), Reply::Null);
        for (args, e) in [
            (&["memory", "usage", "k", "samples", "-1"][..], ERR_SYNTAX),
            (&["memory", "usage", "k", "samples"], ERR_SYNTAX),
            (&["memory", "usage", "k", "foo"], ERR_SYNTAX),
            (
                &["memory", "usage", "k", "samples", "x"],
                super::super::ERR_NOT_INTEGER,
            ),
        ] {
            assert_eq!(h.run(args), Reply::Error(e.into()), "{args:?}");
        }
    }
}
