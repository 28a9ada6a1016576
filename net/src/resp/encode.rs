//! RESP2 reply encoding (append-to-`Vec` writers and an owned [`Reply`] tree) and an incremental
//! reply parser for clients and tests.
//!
//! The writers never allocate beyond growing `out`, and never emit an invalid frame: CR and LF in
//! simple strings and errors are replaced by spaces, as Redis does for error replies.

use super::parse::{ProtocolError, string2ll};

pub const OK: &[u8] = b"+OK\r\n";
pub const NULL_BULK: &[u8] = b"$-1\r\n";
pub const NULL_ARRAY: &[u8] = b"*-1\r\n";
pub const EMPTY_ARRAY: &[u8] = b"*0\r\n";

/// Deepest array nesting [`ReplyParser`] accepts. Bounds the recursion of `Reply`'s drop and
/// encode on trees that come from the network; real replies nest a few levels at most.
pub const MAX_REPLY_DEPTH: usize = 512;

const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Formats `n` right-aligned into `buf`, two digits per division, and returns the digits.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

/// Appends the decimal form of `n` (no framing); e.g. for INCR's bulk-less callers or for
/// building bulk payloads of numbers.
pub fn write_decimal(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(format_u64(n.unsigned_abs(), &mut buf));
}

/// `<prefix><n>\r\n`, the shape shared by integers and bulk/array headers.
fn write_prefixed_len(out: &mut Vec<u8>, prefix: u8, n: u64) {
    let mut buf = [0u8; 20];
    let digits = format_u64(n, &mut buf);
    out.reserve(digits.len() + 3);
    out.push(prefix);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// Appends `text`, turning CR and LF into spaces so the line cannot end early.
fn write_line_text(out: &mut Vec<u8>, text: &[u8]) {
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text);
    }
}

/// `+<text>\r\n`
pub fn write_simple(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.push(b'+');
    write_line_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// A `<COMMAND> HELP` reply: one simple string per line.
pub fn write_help(out: &mut Vec<u8>, lines: &[&str]) {
    // Every HELP reply ends with the HELP entry itself, as in Redis.
    const TAIL: [&str; 2] = ["HELP", "    Prints this help."];
    write_array_len(out, lines.len() + TAIL.len());
    for l in lines.iter().chain(TAIL.iter()) {
        write_simple(out, l.as_bytes());
    }
}

/// `+OK\r\n`
pub fn write_ok(out: &mut Vec<u8>) {
    out.extend_from_slice(OK);
}

/// `-<text>\r\n`. `text` is the full message including its code, e.g. `ERR unknown command`;
/// a leading `-` is not doubled.
pub fn write_error(out: &mut Vec<u8>, text: &[u8]) {
    let text = text.strip_prefix(b"-").unwrap_or(text);
    out.reserve(text.len() + 3);
    out.push(b'-');
    write_line_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// `:<n>\r\n`
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let digits = format_u64(n.unsigned_abs(), &mut buf);
    out.reserve(digits.len() + 4);
    out.push(b':');
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n<data>\r\n`
pub fn write_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 25);
    write_bulk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n` alone, for payloads written in pieces; the caller appends exactly `len` bytes
/// and then `\r\n`.
pub fn write_bulk_header(out: &mut Vec<u8>, len: usize) {
    write_prefixed_len(out, b'$', len as u64);
}

/// Null bulk string `$-1\r\n`.
pub fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(NULL_BULK);
}

/// `*<n>\r\n`; the caller then writes `n` replies.
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    write_prefixed_len(out, b'*', n as u64);
}

/// `bytes` quoted and escaped as Redis's `sdscatrepr` does (redis-cli's output, MONITOR's
/// lines): `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b`, printable ASCII as is, anything else
/// as `\xhh`.
pub fn write_repr(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
    }
    out.push(b'"');
}

/// Null array `*-1\r\n`.
pub fn write_null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(NULL_ARRAY);
}

/// An owned RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Vec<u8>),
    /// Full error text including its code, without the leading `-`.
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    /// Null bulk string.
    Null,
    Array(Vec<Reply>),
    NullArray,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple(b"OK".to_vec())
    }

    pub fn error(text: impl Into<Vec<u8>>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(data: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(data.into())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => write_simple(out, s),
            Reply::Error(e) => write_error(out, e),
            Reply::Integer(n) => write_integer(out, *n),
            Reply::Bulk(b) => write_bulk(out, b),
            Reply::Null => write_null(out),
            Reply::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Reply::NullArray => write_null_array(out),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Incremental RESP2 reply parser.
///
/// Completed array elements are kept between calls, so a large array arriving in many reads is
/// parsed once; only the element being received is looked at again. Same buffer contract as
/// [`super::parse::Parser`]: pass the reply from its first byte, growing only at the end, until a
/// reply is returned.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Offset of the next unparsed element.
    pos: usize,
    /// Open arrays: the elements so far and how many are still missing.
    stack: Vec<(Vec<Reply>, usize)>,
}

/// One element: a complete value or the header of a non-empty array.
enum Item {
    Value(Reply),
    ArrayHeader(usize),
}

/// Largest number of array slots reserved from a declared length before elements arrive.
const REPLY_PREALLOC_MAX: usize = 1024;

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
    }

    /// Parses one reply from the start of `buf`: `Ok(Some((reply, consumed)))`, or `Ok(None)` if
    /// more bytes are needed.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        if buf.len() < self.pos {
            self.reset();
        }
        let result = self.advance(buf);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        loop {
            let Some((item, next)) = parse_item(buf, self.pos)? else {
                return Ok(None);
            };
            self.pos = next;
            let mut value = match item {
                Item::ArrayHeader(n) => {
                    if self.stack.len() >= MAX_REPLY_DEPTH {
                        return Err(ProtocolError::ReplyTooDeep);
                    }
                    self.stack
                        .push((Vec::with_capacity(n.min(REPLY_PREALLOC_MAX)), n));
                    continue;
                }
                Item::Value(v) => v,
            };
            // Close every array this value completes.
            loop {
                let Some((items, missing)) = self.stack.last_mut() else {
                    let consumed = self.pos;
                    self.reset();
                    return Ok(Some((value, consumed)));
                };
                items.push(value);
                *missing -= 1;
                if *missing > 0 {
                    break;
                }
                let Some((items, _)) = self.stack.pop() else {
                    break;
                };
                value = Reply::Array(items);
            }
        }
    }
}

/// Parses the element starting at `pos`; returns it and the offset just past it.
fn parse_item(buf: &[u8], pos: usize) -> Result<Option<(Item, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let start = pos + 1;
    let rest = buf.get(start..).unwrap_or_default();
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProtocolError::InvalidReplyLine),
    }
    let line = rest.get(..cr).unwrap_or_default();
    let next = start + cr + 2;
    let item = match kind {
        b'+' => Item::Value(Reply::Simple(line.to_vec())),
        b'-' => Item::Value(Reply::Error(line.to_vec())),
        b':' => Item::Value(Reply::Integer(
            string2ll(line).ok_or(ProtocolError::InvalidReplyInteger)?,
        )),
        b'$' => match string2ll(line) {
            Some(-1) => Item::Value(Reply::Null),
            Some(n) => {
                let len = usize::try_from(n).map_err(|_| ProtocolError::InvalidReplyLength)?;
                let end = next.saturating_add(len);
                let after = end.saturating_add(2);
                if buf.len() < after {
                    return Ok(None);
                }
                if buf.get(end..after) != Some(&b"\r\n"[..]) {
                    return Err(ProtocolError::InvalidReplyLine);
                }
                let data = buf.get(next..end).unwrap_or_default();
                return Ok(Some((Item::Value(Reply::Bulk(data.to_vec())), after)));
            }
            None => return Err(ProtocolError::InvalidReplyLength),
        },
        b'*' => match string2ll(line) {
            Some(-1) => Item::Value(Reply::NullArray),
            Some(0) => Item::Value(Reply::Array(Vec::new())),
            Some(n) => Item::ArrayHeader(
                usize::try_from(n).map_err(|_| ProtocolError::InvalidReplyLength)?,
            ),
            None => return Err(ProtocolError::InvalidReplyLength),
        },
        other => return Err(ProtocolError::InvalidReplyType(other)),
    };
    Ok(Some((item, next)))
}

/// Stateless form of [`ReplyParser::parse`]; re-parses from scratch on every call.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    ReplyParser::new().parse(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn writers() {
        assert_eq!(enc(write_ok), b"+OK\r\n");
        assert_eq!(enc(|o| write_simple(o, b"PONG")), b"+PONG\r\n");
        assert_eq!(enc(|o| write_simple(o, b"a\r\nb")), b"+a  b\r\n");
        assert_eq!(
            enc(|o| write_error(o, b"ERR unknown command")),
            b"-ERR unknown command\r\n"
        );
        assert_eq!(enc(|o| write_error(o, b"-ERR x")), b"-ERR x\r\n");
        assert_eq!(enc(|o| write_error(o, b"ERR a\nb\r")), b"-ERR a b \r\n");
        assert_eq!(enc(|o| write_bulk(o, b"foo")), b"$3\r\nfoo\r\n");
        assert_eq!(enc(|o| write_bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(enc(|o| write_bulk(o, b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(enc(|o| write_bulk_header(o, 12345)), b"$12345\r\n");
        assert_eq!(enc(write_null), b"$-1\r\n");
        assert_eq!(enc(|o| write_array_len(o, 0)), b"*0\r\n");
        assert_eq!(enc(|o| write_array_len(o, 100)), b"*100\r\n");
        assert_eq!(enc(write_null_array), b"*-1\r\n");
    }

    #[test]
    fn integers() {
        for n in [
            0i64,
            1,
            -1,
            9,
            10,
            -10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            -12345,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            1 << 40,
        ] {
            assert_eq!(
                enc(|o| write_integer(o, n)),
                format!(":{n}\r\n").into_bytes()
            );
            assert_eq!(enc(|o| write_decimal(o, n)), n.to_string().into_bytes());
        }
        assert_eq!(
            enc(|o| write_bulk_header(o, usize::MAX)),
            format!("${}\r\n", usize::MAX).into_bytes()
        );
    }

    #[test]
    fn reply_encode() {
        let r = Reply::Array(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(-5),
            Reply::bulk("v"),
            Reply::Null,
            Reply::NullArray,
            Reply::Array(vec![]),
        ]);
        assert_eq!(
            r.to_bytes(),
            b"*7\r\n+OK\r\n-ERR x\r\n:-5\r\n$1\r\nv\r\n$-1\r\n*-1\r\n*0\r\n"
        );
    }

    #[test]
    fn reply_parse_basic() {
        assert_eq!(parse_reply(b"+OK\r\nextra"), Ok(Some((Reply::ok(), 5))));
        assert_eq!(
            parse_reply(b"-ERR bad\r\n"),
            Ok(Some((Reply::error("ERR bad"), 10)))
        );
        assert_eq!(parse_reply(b":-42\r\n"), Ok(Some((Reply::Integer(-42), 6))));
        assert_eq!(parse_reply(b"$-1\r\n"), Ok(Some((Reply::Null, 5))));
        assert_eq!(parse_reply(b"*-1\r\n"), Ok(Some((Reply::NullArray, 5))));
        assert_eq!(parse_reply(b"*0\r\n"), Ok(Some((Reply::Array(vec![]), 4))));
        assert_eq!(
            parse_reply(b"$4\r\n\r\n\r\n\r\n"),
            Ok(Some((Reply::bulk("\r\n\r\n"), 10)))
        );
        assert_eq!(
            parse_reply(b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"),
            Ok(Some((
                Reply::Array(vec![Reply::Array(vec![Reply::Integer(1)]), Reply::bulk("")]),
                18
            )))
        );
        for partial in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b"$3\r\nfo",
            b"$3\r\nfoo\r",
            b"*2\r\n:1\r\n",
        ] {
            assert_eq!(parse_reply(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn reply_parse_errors() {
        let e = parse_reply(b"?x\r\n").unwrap_err();
        assert_eq!(e, ProtocolError::InvalidReplyType(b'?'));
        assert_eq!(e.to_string(), "got '?' as reply type byte");
        assert_eq!(parse_reply(b"+OK\rX"), Err(ProtocolError::InvalidReplyLine));
        assert_eq!(
            parse_reply(b"$3\r\nfooXY"),
            Err(ProtocolError::InvalidReplyLine)
        );
        assert_eq!(
            parse_reply(b":abc\r\n"),
            Err(ProtocolError::InvalidReplyInteger)
        );
        assert_eq!(
            parse_reply(b":+1\r\n"),
            Err(ProtocolError::InvalidReplyInteger)
        );
        assert_eq!(
            parse_reply(b"$-2\r\n"),
            Err(ProtocolError::InvalidReplyLength)
        );
        assert_eq!(
            parse_reply(b"$x\r\n"),
            Err(ProtocolError::InvalidReplyLength)
        );
        assert_eq!(
            parse_reply(b"*-2\r\n"),
            Err(ProtocolError::InvalidReplyLength)
        );
        let deep = b"*1\r\n".repeat(MAX_REPLY_DEPTH + 1);
        assert_eq!(parse_reply(&deep), Err(ProtocolError::ReplyTooDeep));
        let mut ok = b"*1\r\n".repeat(MAX_REPLY_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert!(parse_reply(&ok).unwrap().is_some());
    }

    #[test]
    fn huge_declared_reply_lengths() {
        let mut p = ReplyParser::new();
        assert_eq!(
            p.parse(b"*9223372036854775807\r\n$9223372036854775807\r\nab"),
            Ok(None)
        );
        assert!(p.stack[0].0.capacity() <= REPLY_PREALLOC_MAX);
    }

    #[test]
    fn reply_parser_resumes() {
        let reply = Reply::Array(
            (0..1000)
                .map(|i| Reply::Array(vec![Reply::Integer(i), Reply::bulk(i.to_string())]))
                .collect(),
        );
        let bytes = reply.to_bytes();
        let mut p = ReplyParser::new();
        let mut got = None;
        for end in 1..=bytes.len() {
            if let Some(r) = p.parse(&bytes[..end]).unwrap() {
                assert_eq!(end, bytes.len());
                got = Some(r);
            }
        }
        assert_eq!(got, Some((reply, bytes.len())));
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let text = prop::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..10,
        );
        let leaf = prop_oneof![
            text.clone().prop_map(Reply::Simple),
            // The encoder drops one leading '-' (callers may pass "-ERR ..."), so an error
            // text never starts with one.
            text.prop_map(|t| Reply::Error(t.into_iter().skip_while(|b| *b == b'-').collect())),
            any::<i64>().prop_map(Reply::Integer),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Reply::Bulk),
            Just(Reply::Null),
            Just(Reply::NullArray),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    proptest! {
        #[test]
        fn reply_roundtrip(replies in prop::collection::vec(arb_reply(), 1..4), chunk in 1usize..16) {
            let mut bytes = Vec::new();
            for r in &replies {
                r.encode(&mut bytes);
            }
            // Whole buffer, one reply at a time.
            let mut pos = 0;
            for r in &replies {
                let (got, n) = parse_reply(&bytes[pos..]).unwrap().unwrap();
                prop_assert_eq!(&got, r);
                pos += n;
            }
            prop_assert_eq!(pos, bytes.len());
            // Fed in chunks through one resumable parser.
            let mut p = ReplyParser::new();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some((r, n)) = p.parse(&buf).unwrap() {
                    got.push(r);
                    buf.drain(..n);
                }
            }
            prop_assert_eq!(got, replies);
        }

        #[test]
        fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&input);
            let mut p = ReplyParser::new();
            for end in 0..=input.len() {
                if p.parse(&input[..end]).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn replyish_bytes_never_panic(
            input in prop::collection::vec(
                prop::sample::select(b"*$:+-\r\n0123-456789x".to_vec()), 0..200),
        ) {
            let whole = parse_reply(&input);
            let mut p = ReplyParser::new();
            let mut last = Ok(None);
            for end in 0..=input.len() {
                last = p.parse(&input[..end]);
                if !matches!(last, Ok(None)) {
                    break;
                }
            }
            prop_assert_eq!(last, whole);
        }

        #[test]
        fn simple_and_error_never_break_framing(text in prop::collection::vec(any::<u8>(), 0..40)) {
            for out in [enc(|o| write_simple(o, &text)), enc(|o| write_error(o, &text))] {
                let (_, n) = parse_reply(&out).unwrap().unwrap();
                prop_assert_eq!(n, out.len());
            }
        }

        #[test]
        fn integer_matches_std(n in any::<i64>()) {
            prop_assert_eq!(enc(|o| write_integer(o, n)), format!(":{n}\r\n").into_bytes());
        }
    }
}
