//! The Redis-compatible command layer: the command table and the commands that run against one
//! store (single-key commands and the per-store parts of multi-key ones).
//!
//! Replies and error texts are those of Redis 7.0. A keyed command appends exactly one reply,
//! and nothing here panics, whatever the arguments.
mod bitfield;
mod bits;
mod defs;
pub mod expire;
pub mod introspect;
mod ldouble;
pub mod multi;
pub mod strings;
pub mod table;

#[cfg(test)]
mod testutil;

use std::borrow::Cow;

use simplekv_engine::Store;

use crate::resp::write_error;
pub use table::{COMMANDS, CommandSpec, Kind, MultiKind, lookup};

/// What a command needs besides its arguments and the store.
#[derive(Debug, Clone, Copy)]
pub struct ExecCtx {
    /// The time the command runs at (unix ms), when fixed (tests); `None` reads the clock
    /// when a command asks (`now_ms`), so that commands without expiries, nearly all of
    /// them, never pay for it.
    pub now_ms: Option<u64>,
    /// Largest string a command may build (SETRANGE, APPEND), as Redis's proto-max-bulk-len.
    pub proto_max_bulk_len: usize,
}

impl ExecCtx {
    /// The base of relative expiries and TTLs (unix ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms.unwrap_or_else(simplekv_engine::system_clock)
    }
}

/// Result of running a command on a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Wrote,
}

/// An error reply's text, without the leading `-`.
pub(crate) type ErrText = Cow<'static, [u8]>;

pub(crate) const ERR_SYNTAX: &str = "ERR syntax error";
pub(crate) const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";

pub(crate) fn err(text: &'static str) -> ErrText {
    Cow::Borrowed(text.as_bytes())
}

/// A storage error as a reply: `ERR <what the engine says>`.
pub(crate) fn storage_err(e: impl std::fmt::Display) -> ErrText {
    Cow::Owned(format!("ERR {e}").into_bytes())
}

pub(crate) fn invalid_expire(spec: &CommandSpec) -> ErrText {
    Cow::Owned(format!("ERR invalid expire time in '{}' command", spec.name).into_bytes())
}

/// Redis's getLongLongFromObjectOrReply on an argument.
pub(crate) fn parse_i64(arg: &[u8]) -> Result<i64, ErrText> {
    crate::resp::string2ll(arg).ok_or_else(|| err(ERR_NOT_INTEGER))
}

/// OBJECT and MEMORY (any case): containers whose keyed subcommands name the key after the
/// subcommand.
fn is_introspection(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"object") || name.eq_ignore_ascii_case(b"memory")
}

/// Whether a subcommand works on a key (`OBJECT ENCODING key`, `MEMORY USAGE key`: the only
/// subcommands the table gives a key position), so that it runs on the key's owner like a
/// keyed command.
pub fn keyed_subcommand(spec: &CommandSpec) -> bool {
    spec.name.contains('|') && spec.first_key > 0
}

/// The key of a keyed command's arguments: `args[1]`, or `args[2]` for OBJECT and MEMORY
/// (`None` if it is missing).
pub fn key_of<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let at = if args.first().is_some_and(|n| is_introspection(n)) {
        2
    } else {
        1
    };
    args.get(at).copied()
}

/// Runs a single-key command (`spec.kind == Kind::Keyed`; `args[0]` is the command name in
/// any case, `args[1]` the key) on the store that owns the key, appending exactly one RESP
/// reply to `out`. `Wrote` whenever anything was appended to the store's log.
pub fn exec_keyed(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut Store,
    ctx: &ExecCtx,
    out: &mut Vec<u8>,
) -> Effect {
    // The caller checks arity; checking again keeps a caller bug from reaching an index.
    if !table::arity_ok(spec, args.len()) || key_of(args).is_none() {
        let text = format!("ERR wrong number of arguments for '{}' command", spec.name);
        write_error(out, text.as_bytes());
        return Effect::Read;
    }
    if is_introspection(spec.name.as_bytes()) {
        if let Err(text) = introspect::exec(spec, args, store, out) {
            write_error(out, &text);
        }
        return Effect::Read;
    }
    let log_end = store.log_end();
    // Redis files the keyed commands of expire.rs under "generic", those of bits.rs under
    // "bitmap", the rest under "string".
    let result = match spec.group {
        "generic" => expire::exec(spec, args, store, ctx, out),
        "bitmap" => bits::exec(spec.name, args, store, ctx, out),
        _ => strings::exec(spec, args, store, ctx, out),
    };
    if let Err(text) = result {
        write_error(out, &text);
    }
    if store.log_end() == log_end {
        Effect::Read
    } else {
        Effect::Wrote
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::testutil::Harness;
    use super::*;
    use crate::resp::parse_reply;

    fn token() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "k",
                "nx",
                "XX",
                "get",
                "ex",
                "PX",
                "exat",
                "pxat",
                "keepttl",
                "persist",
                "gt",
                "lt",
                "0",
                "1",
                "-1",
                "10",
                "1.5",
                "-0",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854776",
                "inf",
                "nan",
                "0x1p3",
                "1e4932",
                "",
                " ",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        // Whatever the arguments, every keyed command answers exactly one well-formed reply.
        #[test]
        fn any_arguments_give_one_reply(
            script in prop::collection::vec(
                (prop::sample::select(
                    COMMANDS.iter().filter(|c| c.kind == Kind::Keyed).collect::<Vec<_>>()),
                 prop::collection::vec(token(), 0..6)),
                1..24),
        ) {
            let mut h = Harness::new();
            h.proto_max_bulk_len = 1 << 16;
            for (spec, rest) in script {
                let mut args: Vec<&[u8]> = vec![spec.name.as_bytes(), b"k"];
                args.extend(rest.iter().map(|a| a.as_slice()));
                let ctx = h.ctx();
                let mut out = Vec::new();
                let was = h.store.exists(b"k");
                let effect = exec_keyed(spec, &args, &mut h.store, &ctx, &mut out);
                let (_, used) = parse_reply(&out).unwrap().unwrap();
                prop_assert_eq!(used, out.len());
                if effect == Effect::Read && out.starts_with(b"+OK") {
                    // Only a SET of a value that has already expired, on a key that is not
                    // there, has nothing to write (Redis answers OK too).
                    let expiring = args.iter().skip(3).any(|a| {
                        [&b"ex"[..], b"px", b"exat", b"pxat"]
                            .iter()
                            .any(|o| a.eq_ignore_ascii_case(o))
                    });
                    prop_assert!(
                        spec.name == "set" && expiring && !was && !h.store.exists(b"k"),
                        "{:?} wrote nothing",
                        args
                    );
                }
                h.advance(250);
            }
        }
    }
}
