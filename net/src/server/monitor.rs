//! MONITOR: every command clients run on this node, one line each in Redis's format
//! (`+1339518083.107412 [0 127.0.0.1:60866] "set" "x" "6"`), streamed to the connections
//! that asked.
//!
//! A command is formatted by the worker that owns its connection, as it runs it; a turn's
//! lines collect in one buffer, which the end of the turn hands to every worker with a
//! monitoring connection ([`Monitors`]), this one included, where it is appended to each such
//! connection's output. So a client's commands appear in the order it sent them, and the lines
//! of clients on different workers interleave turn by turn. While no connection monitors,
//! a command costs one relaxed atomic load.
//!
//! As in Redis, a line is written for each command that ran: not for one refused before
//! running (unknown, wrong arity, NOAUTH, a redirect), nor for admin commands (CONFIG,
//! CLIENT LIST, SLOWLOG, SHUTDOWN, MONITOR...), and a transaction's commands appear when EXEC
//! runs them, followed by EXEC itself. AUTH's arguments, and the credentials of HELLO's AUTH,
//! are written as `(redacted)`.
use std::time::SystemTime;

use super::conn::Client;
use crate::cmd;

/// Feeds `lines` of a client's commands to `buf` (the worker's lines of the turn), or behind
/// the lines its transactions still running will give.
pub fn feed(client: &mut Client, buf: &mut Vec<u8>, lines: &[u8]) {
    if lines.is_empty() {
        return;
    }
    if client.monitor_held.is_empty() {
        buf.extend_from_slice(lines);
    } else {
        client.monitor_held.push_back((None, lines.to_vec()));
    }
}

/// The client's transaction whose EXEC has reply sequence number `seq` runs on: the lines of
/// the client's next commands wait for its own (`release`).
pub fn hold(client: &mut Client, seq: u64) {
    client.monitor_held.push_back((Some(seq), Vec::new()));
}

/// The transaction of `seq` finished with `lines`: they, and the lines held behind them up to
/// the next transaction still running, are fed to `buf`.
pub fn release(client: &mut Client, buf: &mut Vec<u8>, seq: u64, lines: &[u8]) {
    match client
        .monitor_held
        .iter_mut()
        .find(|(s, _)| *s == Some(seq))
    {
        Some(held) => *held = (None, lines.to_vec()),
        None => return feed(client, buf, lines),
    }
    while client
        .monitor_held
        .front()
        .is_some_and(|(s, _)| s.is_none())
    {
        if let Some((_, l)) = client.monitor_held.pop_front() {
            buf.extend_from_slice(&l);
        }
    }
}

/// Whether a command that ran is shown to monitors: not the admin commands (Redis leaves
/// them out as too sensitive to show), judged by the subcommand where there is one.
pub fn shown(args: &[&[u8]]) -> bool {
    cmd::lookup(args[0]).is_some_and(|spec| !spec.for_args(args).flags.contains(&"admin"))
}

/// Whether a command dispatched with the connection `in_tx` (inside MULTI) ran then, and not
/// only went into the queue: inside a transaction, MULTI, DISCARD and WATCH run (the first
/// and last refused), as do QUIT and RESET; the queued commands are shown when EXEC runs
/// them, followed by EXEC (`multi::TxRan`).
pub fn ran_now(in_tx: bool, name: &[u8]) -> bool {
    !in_tx
        || ["multi", "discard", "watch", "quit", "reset"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Whether a monitoring connection may not run the command: one that reads or writes keys,
/// refused as Redis refuses it to a replica ("Replica can't interact with the keyspace").
pub fn refused_to_monitor(spec: &'static cmd::table::CommandSpec, args: &[&[u8]]) -> bool {
    let spec = spec.for_args(args);
    ["readonly", "write"].iter().any(|f| spec.flags.contains(f)) || spec.may_replicate()
}

/// Appends the monitor line of `args`, run at `at` by the client at `addr`.
pub fn format_line(buf: &mut Vec<u8>, at: SystemTime, addr: &str, args: &[&[u8]]) {
    let t = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    buf.extend_from_slice(
        format!("+{}.{:06} [0 {addr}]", t.as_secs(), t.subsec_micros()).as_bytes(),
    );
    let hidden = redacted(args);
    for (i, a) in args.iter().enumerate() {
        buf.push(b' ');
        if hidden.contains(&i) {
            buf.extend_from_slice(b"\"(redacted)\"");
        } else {
            crate::resp::write_repr(buf, a);
        }
    }
    buf.extend_from_slice(b"\r\n");
}

/// The last line of `lines` (empty when there is none): a transaction's EXEC.
pub fn last_line(lines: &[u8]) -> &[u8] {
    let body = lines.strip_suffix(b"\r\n").unwrap_or(lines);
    match body.windows(2).rposition(|w| w == b"\r\n") {
        Some(i) => &lines[i + 2..],
        None => lines,
    }
}

/// The arguments written as `(redacted)`: AUTH's, and the two after HELLO's AUTH option
/// (found as HELLO reads its options, so that a client named "auth" is no option).
fn redacted(args: &[&[u8]]) -> Vec<usize> {
    if args[0].eq_ignore_ascii_case(b"auth") {
        return (1..args.len()).collect();
    }
    let mut hidden = Vec::new();
    if args[0].eq_ignore_ascii_case(b"hello") {
        let mut i = 2;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"auth") {
                hidden.extend((i + 1..i + 3).filter(|&k| k < args.len()));
                i += 3;
            } else if args[i].eq_ignore_ascii_case(b"setname") {
                i += 2;
            } else {
                break;
            }
        }
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(args: &[&[u8]]) -> String {
        let mut buf = Vec::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        format_line(&mut buf, at, "127.0.0.1:5000", args);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn lines_are_written_as_redis_writes_them() {
        assert_eq!(
            line(&[b"SET", b"k", b"v"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"SET\" \"k\" \"v\"\r\n"
        );
        // Checked against Redis 7.0: SET "a\x00b" "q\"x" and the other escapes.
        assert_eq!(
            line(&[b"set", b"a\x00b", b"q\"x\\\n\r\t\x07\x08\xff~"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"set\" \"a\\x00b\" \"q\\\"x\\\\\\n\\r\\t\\a\\b\\xff~\"\r\n"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            line(&[b"AUTH", b"user", b"secret"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"
        );
        assert_eq!(
            line(&[b"HELLO", b"2", b"auth", b"default", b"pw", b"SETNAME", b"n"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"HELLO\" \"2\" \"auth\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
        );
        // A client named "auth" is no AUTH option.
        assert_eq!(
            line(&[
                b"HELLO", b"3", b"SETNAME", b"auth", b"AUTH", b"default", b"secret"
            ]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"HELLO\" \"3\" \"SETNAME\" \"auth\" \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"
        );
        assert_eq!(
            line(&[b"HELLO", b"2"]),
            "+1700000000.000042 [0 127.0.0.1:5000] \"HELLO\" \"2\"\r\n"
        );
    }

    #[test]
    fn admin_commands_are_not_shown_and_keyspace_commands_are_refused_to_monitors() {
        assert!(shown(&[b"get", b"k"]));
        assert!(shown(&[b"INFO"]));
        assert!(shown(&[b"CLIENT", b"SETNAME", b"x"]));
        assert!(!shown(&[b"CLIENT", b"LIST"]));
        assert!(!shown(&[b"config", b"get", b"port"]));
        assert!(!shown(&[b"MONITOR"]));
        let spec = |name: &[u8]| cmd::lookup(name).unwrap();
        assert!(refused_to_monitor(spec(b"get"), &[b"get", b"k"]));
        assert!(refused_to_monitor(spec(b"set"), &[b"set", b"k", b"v"]));
        assert!(refused_to_monitor(spec(b"dbsize"), &[b"dbsize"]));
        assert!(!refused_to_monitor(spec(b"ping"), &[b"ping"]));
        assert!(refused_to_monitor(
            spec(b"publish"),
            &[b"publish", b"c", b"m"]
        ));
        assert!(!refused_to_monitor(
            spec(b"subscribe"),
            &[b"subscribe", b"c"]
        ));
        assert!(!refused_to_monitor(spec(b"info"), &[b"info"]));
    }
}
