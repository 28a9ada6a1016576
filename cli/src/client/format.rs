//! Printing replies the way redis-cli does.
//!
//! - [`Format::Tty`] (redis-cli's default on a terminal): `OK`, `"value"` with non-printable
//!   bytes escaped (`"\x00\xff\r\n"`), `(nil)`, `(integer) 3`, `(error) ERR ...`,
//!   `(empty array)`, and arrays as numbered lists (`1) "a"`) whose index column is as wide as
//!   the largest index and whose nested lists are indented under their parent's number.
//! - [`Format::Raw`] (`--raw`, and the default when stdout is not a terminal): bare values, one
//!   per line; integers as digits, errors as their text (`ERR ...`), nil as an empty line, array
//!   elements one per line (an empty or nil element is an empty line). Unlike redis-cli, an
//!   error is followed by one newline, not two.

use std::io::Write as _;

use simplekv_net::resp::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tty,
    Raw,
}

/// Whether redis-cli prints this command's reply as it is, even on a terminal: the commands
/// whose reply is text with lines of its own (INFO, CLIENT LIST, CLUSTER NODES...).
pub fn prints_as_is(args: &[Vec<u8>]) -> bool {
    let lower = |a: Option<&Vec<u8>>| a.map(|a| a.to_ascii_lowercase()).unwrap_or_default();
    let (name, sub) = (lower(args.first()), lower(args.get(1)));
    match name.as_slice() {
        b"info" | b"lolwut" => true,
        b"client" => matches!(sub.as_slice(), b"list" | b"info"),
        b"cluster" => args.len() == 2 && matches!(sub.as_slice(), b"nodes" | b"info"),
        b"memory" => matches!(sub.as_slice(), b"malloc-stats" | b"doctor"),
        b"latency" => (args.len() == 3 && sub == b"graph") || (args.len() == 2 && sub == b"doctor"),
        _ => false,
    }
}

/// The reply to `args` as printed: a text reply of [`prints_as_is`]'s commands as it is
/// (no quotes, no newline added: it ends with its own), anything else by `format`.
pub fn format_reply_to(args: &[Vec<u8>], reply: &Reply, format: Format) -> Vec<u8> {
    match reply {
        Reply::Bulk(text) if prints_as_is(args) => text.clone(),
        _ => format_reply(reply, format),
    }
}

/// A whole reply as printed, newline included.
pub fn format_reply(reply: &Reply, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::Tty => tty(reply, "", &mut out),
        Format::Raw => {
            raw(reply, &mut out);
            out.push(b'\n');
        }
    }
    out
}

/// `bytes` quoted and escaped like redis-cli's `sdscatrepr`: `\\`, `\"`, `\n`, `\r`, `\t`,
/// `\a`, `\b`, printable ASCII as is, anything else as `\xHH`.
pub fn repr(bytes: &[u8], out: &mut Vec<u8>) {
    simplekv_net::resp::write_repr(out, bytes);
}

/// redis-cli's `cliFormatReplyTTY`. `prefix` is the indentation of the lines after the first
/// one (the first line follows the parent's `N) `).
fn tty(reply: &Reply, prefix: &str, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) => {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        Reply::Error(e) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Reply::Integer(n) => {
            let _ = writeln!(out, "(integer) {n}");
        }
        Reply::Bulk(b) => {
            repr(b, out);
            out.push(b'\n');
        }
        Reply::Null | Reply::NullArray => out.extend_from_slice(b"(nil)\n"),
        Reply::Array(items) if items.is_empty() => out.extend_from_slice(b"(empty array)\n"),
        Reply::Array(items) => {
            let width = items.len().to_string().len();
            let inner = format!("{prefix}{}", " ".repeat(width + 2));
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(prefix.as_bytes());
                }
                let _ = write!(out, "{:>width$}) ", i + 1);
                tty(item, &inner, out);
            }
        }
    }
}

/// redis-cli's `cliFormatReplyRaw`, without the final newline.
fn raw(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) | Reply::Bulk(s) | Reply::Error(s) => out.extend_from_slice(s),
        Reply::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        Reply::Null | Reply::NullArray => {}
        Reply::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tty_s(r: &Reply) -> String {
        String::from_utf8(format_reply(r, Format::Tty)).expect("utf8")
    }

    fn raw_b(r: &Reply) -> Vec<u8> {
        format_reply(r, Format::Raw)
    }

    fn arr(items: Vec<Reply>) -> Reply {
        Reply::Array(items)
    }

    fn repr_s(b: &[u8]) -> String {
        let mut out = Vec::new();
        repr(b, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn repr_escapes_like_redis_cli() {
        assert_eq!(repr_s(b"value"), r#""value""#);
        assert_eq!(repr_s(b""), r#""""#);
        assert_eq!(repr_s(b"\x00\xff\r\n"), r#""\x00\xff\r\n""#);
        assert_eq!(repr_s(b"a\tb\x07\x08"), r#""a\tb\a\b""#);
        assert_eq!(repr_s(br#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
        assert_eq!(repr_s(b"\x1b[0m\x7f"), r#""\x1b[0m\x7f""#);
        // Non-ASCII (UTF-8 included) is escaped byte by byte, as redis-cli does in the C locale.
        assert_eq!(repr_s("é".as_bytes()), r#""\xc3\xa9""#);
        assert_eq!(repr_s(b" ~"), r#"" ~""#);
        for b in 0u8..=255 {
            let s = repr_s(&[b]);
            assert!(s.bytes().all(|c| (0x20..0x7f).contains(&c)), "{b}: {s}");
        }
    }

    #[test]
    fn tty_scalars() {
        assert_eq!(tty_s(&Reply::ok()), "OK\n");
        assert_eq!(tty_s(&Reply::Simple(b"PONG".to_vec())), "PONG\n");
        assert_eq!(tty_s(&Reply::bulk("1")), "\"1\"\n");
        assert_eq!(tty_s(&Reply::bulk("x\x00y\r\n")), "\"x\\x00y\\r\\n\"\n");
        assert_eq!(tty_s(&Reply::Null), "(nil)\n");
        assert_eq!(tty_s(&Reply::NullArray), "(nil)\n");
        assert_eq!(tty_s(&Reply::Integer(3)), "(integer) 3\n");
        assert_eq!(tty_s(&Reply::Integer(-2)), "(integer) -2\n");
        assert_eq!(
            tty_s(&Reply::error("ERR unknown command 'foo'")),
            "(error) ERR unknown command 'foo'\n"
        );
        assert_eq!(tty_s(&arr(vec![])), "(empty array)\n");
    }

    #[test]
    fn tty_arrays_are_numbered() {
        let r = arr(vec![
            Reply::bulk("a"),
            Reply::Integer(1),
            Reply::Null,
            Reply::ok(),
            Reply::error("ERR x"),
        ]);
        assert_eq!(
            tty_s(&r),
            "1) \"a\"\n2) (integer) 1\n3) (nil)\n4) OK\n5) (error) ERR x\n"
        );
    }

    #[test]
    fn tty_index_column_is_right_aligned() {
        let r = arr((0..11).map(|i| Reply::bulk(format!("v{i}"))).collect());
        let s = tty_s(&r);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], " 1) \"v0\"");
        assert_eq!(lines[8], " 9) \"v8\"");
        assert_eq!(lines[9], "10) \"v9\"");
        assert_eq!(lines[10], "11) \"v10\"");
    }

    #[test]
    fn tty_nested_arrays_indent_like_redis_cli() {
        // As redis-cli prints `EVAL "return {1,{},{2,{'a','b'}}}" 0`.
        let r = arr(vec![
            Reply::Integer(1),
            arr(vec![]),
            arr(vec![
                Reply::Integer(2),
                arr(vec![Reply::bulk("a"), Reply::bulk("b")]),
            ]),
        ]);
        assert_eq!(
            tty_s(&r),
            "1) (integer) 1\n\
             2) (empty array)\n\
             3) 1) (integer) 2\n   \
                2) 1) \"a\"\n      \
                   2) \"b\"\n"
        );
        // A wide outer index column widens the indentation of everything under it, and a wide
        // inner one is right-aligned after the outer number (redis-cli's `COMMAND INFO get`).
        let mut outer: Vec<Reply> = (0..9).map(Reply::Integer).collect();
        outer.insert(
            2,
            arr((0..10)
                .map(|i| Reply::Simple(format!("f{i}").into_bytes()))
                .collect()),
        );
        let s = tty_s(&arr(vec![arr(outer)]));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "1)  1) (integer) 0");
        assert_eq!(lines[1], "    2) (integer) 1");
        assert_eq!(lines[2], "    3)  1) f0");
        assert_eq!(lines[3], "        2) f1");
        assert_eq!(lines[11], "       10) f9");
        assert_eq!(lines[12], "    4) (integer) 2");
        assert_eq!(lines[18], "   10) (integer) 8");
        assert_eq!(lines.len(), 19);
    }

    #[test]
    fn raw_scalars() {
        assert_eq!(raw_b(&Reply::ok()), b"OK\n");
        assert_eq!(raw_b(&Reply::bulk("1")), b"1\n");
        // Raw mode prints the bytes themselves.
        assert_eq!(raw_b(&Reply::bulk("x\x00y\r\n")), b"x\x00y\r\n\n");
        assert_eq!(raw_b(&Reply::bulk("")), b"\n");
        assert_eq!(raw_b(&Reply::Null), b"\n");
        assert_eq!(raw_b(&Reply::NullArray), b"\n");
        assert_eq!(raw_b(&Reply::Integer(200)), b"200\n");
        assert_eq!(raw_b(&Reply::Integer(-1)), b"-1\n");
        assert_eq!(raw_b(&Reply::error("ERR wrong")), b"ERR wrong\n");
        assert_eq!(raw_b(&arr(vec![])), b"\n");
    }

    #[test]
    fn raw_arrays_one_element_per_line() {
        let r = arr(vec![
            Reply::Integer(1),
            arr(vec![]),
            arr(vec![
                Reply::Integer(2),
                arr(vec![Reply::bulk("a"), Reply::bulk("b")]),
            ]),
            Reply::Null,
            Reply::bulk("z"),
        ]);
        // Same bytes as redis-cli --raw for the nesting; nil and empty arrays are empty lines.
        assert_eq!(raw_b(&r), b"1\n\n2\na\nb\n\nz\n");
    }
}
