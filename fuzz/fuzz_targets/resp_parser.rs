//! RESP2 request parser (`simplekv_net::resp::parse`), `split_line` and the reply parser
//! (`simplekv_net::resp::encode::ReplyParser`) on arbitrary bytes.
//!
//! Input layout: `[ctrl, split, chunk, fill, stream...]`
//! - `ctrl` bits 0..=1 / 2..=3 / 4..=5 pick `Limits` (inline / multibulk / bulk length); bits 6
//!   and 7 both set insert 64 KiB + 1 copies of `fill` at `split` (to reach the "too big" paths
//!   with small inputs; such expanded streams skip the byte-at-a-time, stateless and reply
//!   checks, which would make them slow).
//! - `split`: a fuzzer-chosen split point (scaled to the stream length);
//! - `chunk`: a chunk size for a third feeding (0 = byte at a time).
//!
//! Invariants checked (each a panic if violated):
//! - feeding the stream whole, split in two at `split`, byte at a time, in `chunk`-sized pieces
//!   (0 = 1), and through the stateless `parse_command`, give the same commands, consumed byte counts,
//!   inline flags, and the same final error (or the same unconsumed tail);
//! - a non-empty multibulk command re-encodes to exactly the bytes it consumed (the grammar
//!   accepts only canonical lengths), its ranges lie inside those bytes, and any command's
//!   arguments re-encoded (multibulk, and inline with `\xHH` quoting) re-parse to the same args;
//! - an empty multibulk command is `*<n>\r\n` with n <= 0;
//! - a protocol error's reply (`-ERR Protocol error: ...\r\n`) is one valid RESP error reply,
//!   and the parser is usable after an error;
//! - `split_line` agrees with the parser's inline path and its output re-quotes to itself;
//! - the reply parser gives the same result whole, split, and chunked (a reply completes exactly
//!   when its last byte arrives), and every parsed reply re-encodes to what it parsed from, up to
//!   the documented normalisation (CR/LF in simple strings and errors become spaces, a leading
//!   `-` of an error text is not doubled).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simplekv_net::resp::encode::{Reply, ReplyParser, parse_reply};
use simplekv_net::resp::parse::{
    Limits, PROTO_INLINE_MAX_SIZE, Parser, ProtocolError, parse_command, split_line,
};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cmd {
    args: Vec<Vec<u8>>,
    consumed: usize,
    inline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    cmds: Vec<Cmd>,
    /// The error that ended the stream, if any.
    error: Option<ProtocolError>,
    /// Offset of the first byte not consumed by a complete command.
    tail: usize,
}

fn limits(ctrl: u8) -> Limits {
    let d = Limits::default();
    Limits {
        max_inline_len: [d.max_inline_len, 0, 7, 64][usize::from(ctrl & 3)],
        max_multibulk_len: [d.max_multibulk_len, 0, 1, 3][usize::from((ctrl >> 2) & 3)],
        proto_max_bulk_len: [d.proto_max_bulk_len, 0, 1, 9][usize::from((ctrl >> 4) & 3)],
    }
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A line that `sdssplitargs` splits back into exactly `args`.
fn inline_quoted(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        out.push(b'"');
        for &b in a {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        out.extend_from_slice(b"\" ");
    }
    out
}

/// Checks one command returned while parsing `buf` (the slice passed to `parse`).
fn check_command(buf: &[u8], cmd: &simplekv_net::resp::parse::Command<'_>, limits: &Limits) {
    let consumed = cmd.consumed();
    assert!(consumed > 0, "a command consumed no bytes");
    assert!(consumed <= buf.len(), "consumed {consumed} > {}", buf.len());
    let frame = &buf[..consumed];
    assert_eq!(
        cmd.is_inline(),
        frame[0] != b'*',
        "inline flag vs first byte"
    );
    let args = cmd.to_vec();
    assert_eq!(cmd.len(), args.len());
    assert_eq!(cmd.is_empty(), args.is_empty());
    assert_eq!(cmd.iter().len(), args.len());
    for (i, a) in args.iter().enumerate() {
        assert_eq!(cmd.get(i), Some(&a[..]));
    }
    assert_eq!(cmd.get(args.len()), None);
    if cmd.is_inline() {
        assert_eq!(cmd.buf_ranges(), None);
        assert_eq!(
            frame.last(),
            Some(&b'\n'),
            "inline command must end at a newline"
        );
        assert!(
            !frame[..consumed - 1].contains(&b'\n'),
            "inline command spans a newline"
        );
        assert!(
            consumed - 1 <= limits.max_inline_len,
            "inline line longer than max_inline_len"
        );
        // The parser's inline path is split_line of the line without its terminator.
        let line = &frame[..consumed - 1];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert_eq!(split_line(line).as_ref(), Ok(&args), "split_line disagrees");
    } else {
        let ranges = cmd.buf_ranges().expect("multibulk command has ranges");
        assert_eq!(ranges.len(), args.len());
        let mut prev_end = 0;
        for (r, a) in ranges.iter().zip(&args) {
            assert!(r.start >= prev_end && r.end >= r.start && r.end <= consumed);
            assert_eq!(&buf[r.clone()], &a[..]);
            prev_end = r.end;
        }
        if args.is_empty() {
            // `*<n>\r\n` with n <= 0.
            assert!(frame.ends_with(b"\r\n"));
            let n = std::str::from_utf8(&frame[1..consumed - 2])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .expect("empty multibulk has a numeric count");
            assert!(n <= 0, "empty command from count {n}");
        } else {
            // Only canonical lengths are accepted, so re-encoding gives the frame back.
            assert_eq!(multibulk(&args), frame, "multibulk frame is not canonical");
            assert!(args.len() <= limits.max_multibulk_len);
            assert!(args.iter().all(|a| a.len() <= limits.proto_max_bulk_len));
        }
    }
    if !args.is_empty() {
        // Re-encoded arguments re-parse to the same arguments, both ways.
        let l = Limits::default();
        let enc = multibulk(&args);
        let mut p = Parser::new();
        let back = p
            .parse(&enc, &l)
            .expect("re-encoded multibulk")
            .expect("complete");
        assert_eq!(back.consumed(), enc.len());
        assert_eq!(back.to_vec(), args);
        let mut line = inline_quoted(&args);
        assert_eq!(split_line(&line).as_ref(), Ok(&args));
        line.extend_from_slice(b"\r\n");
        if line.len() <= PROTO_INLINE_MAX_SIZE {
            let mut p = Parser::new();
            let back = p
                .parse(&line, &l)
                .expect("re-encoded inline")
                .expect("complete");
            assert_eq!(back.consumed(), line.len());
            assert_eq!(back.to_vec(), args);
        }
    }
}

fn check_error(e: ProtocolError) {
    let mut out = Vec::new();
    e.write_reply(&mut out);
    match parse_reply(&out) {
        Ok(Some((Reply::Error(_), n))) => assert_eq!(n, out.len(), "error reply framing"),
        other => panic!("error reply {out:?} does not parse as one error: {other:?}"),
    }
    let mut text = Vec::new();
    e.write_text(&mut text);
    assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
    let _ = e.to_string();
}

/// Feeds `input` growing by `steps` (the end offsets of successive reads), the way a
/// connection does: the slice passed always starts at the first unconsumed byte and only grows
/// at the end between calls.
fn feed(input: &[u8], steps: &[usize], limits: &Limits, check: bool) -> Outcome {
    let mut parser = Parser::new();
    let mut cmds = Vec::new();
    let mut start = 0;
    for &end in steps {
        loop {
            let buf = &input[start..end];
            match parser.parse(buf, limits) {
                Ok(Some(cmd)) => {
                    if check {
                        check_command(buf, &cmd, limits);
                    }
                    let consumed = cmd.consumed();
                    assert!(consumed > 0 && consumed <= buf.len());
                    cmds.push(Cmd {
                        args: cmd.to_vec(),
                        consumed,
                        inline: cmd.is_inline(),
                    });
                    start += consumed;
                }
                Ok(None) => break,
                Err(e) => {
                    // The connection would close here; the parser must still be reusable.
                    let mut p2 = parser;
                    let again = p2.parse(b"PING\r\n", limits);
                    if limits.max_inline_len >= 5 {
                        let cmd = again.expect("parser usable after error").expect("PING");
                        assert_eq!(cmd.to_vec(), vec![b"PING".to_vec()]);
                    }
                    return Outcome {
                        cmds,
                        error: Some(e),
                        tail: start,
                    };
                }
            }
        }
    }
    Outcome {
        cmds,
        error: None,
        tail: start,
    }
}

/// The same stream through the stateless `parse_command`, one fresh parse per command.
fn feed_stateless(input: &[u8], limits: &Limits) -> Outcome {
    let mut cmds = Vec::new();
    let mut start = 0;
    let mut out = Vec::new();
    loop {
        match parse_command(&input[start..], limits, &mut out) {
            Ok(Some(n)) => {
                cmds.push(Cmd {
                    args: out.clone(),
                    consumed: n,
                    inline: input[start] != b'*',
                });
                start += n;
            }
            Ok(None) => {
                return Outcome {
                    cmds,
                    error: None,
                    tail: start,
                };
            }
            Err(e) => {
                return Outcome {
                    cmds,
                    error: Some(e),
                    tail: start,
                };
            }
        }
    }
}

fn requests(stream: &[u8], split: usize, chunk: usize, limits: &Limits, expanded: bool) {
    let n = stream.len();
    let whole = feed(stream, &[n], limits, true);
    if let Some(e) = whole.error {
        check_error(e);
    }
    assert!(whole.tail <= n);
    let consumed: usize = whole.cmds.iter().map(|c| c.consumed).sum();
    assert_eq!(consumed, whole.tail);

    let two = feed(stream, &[split, n], limits, false);
    assert_eq!(two, whole, "split at {split} differs from whole");

    // Byte at a time (linear: the parser is incremental). Expanded streams (64 KiB+) only get
    // the chunked feeding below, to keep the fuzzer fast.
    if !expanded {
        let steps: Vec<usize> = (0..=n).collect();
        let bytes = feed(stream, &steps, limits, false);
        assert_eq!(bytes, whole, "byte-at-a-time differs from whole");
    }
    let c = chunk.max(1);
    let mut steps: Vec<usize> = (c..n).step_by(c).collect();
    steps.push(n);
    let chunked = feed(stream, &steps, limits, false);
    assert_eq!(chunked, whole, "chunks of {c} differ from whole");

    if !expanded {
        let stateless = feed_stateless(stream, limits);
        assert_eq!(stateless, whole, "parse_command differs from Parser");
    }
}

/// What `Reply::encode` then parsing gives back for a parsed reply.
fn normalize(r: &Reply) -> Reply {
    let line = |t: &[u8]| -> Vec<u8> {
        t.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect()
    };
    match r {
        Reply::Simple(t) => Reply::Simple(line(t)),
        Reply::Error(t) => Reply::Error(line(t.strip_prefix(b"-").unwrap_or(t))),
        Reply::Array(items) => Reply::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn depth(r: &Reply) -> usize {
    match r {
        Reply::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

type ReplyResult = Result<Option<(Reply, usize)>, ProtocolError>;

/// Feeds `buf` to a fresh reply parser growing by `steps`; returns the first non-`None`
/// result and the read end at which it came.
fn feed_reply(buf: &[u8], steps: &[usize]) -> (ReplyResult, usize) {
    let mut p = ReplyParser::new();
    for &end in steps {
        let r = p.parse(&buf[..end]);
        if !matches!(r, Ok(None)) {
            return (r, end);
        }
    }
    (Ok(None), buf.len())
}

fn replies(stream: &[u8], split: usize, chunk: usize) {
    let mut pos = 0;
    // Bounded: every reply consumes at least 3 bytes.
    while pos < stream.len() {
        let buf = &stream[pos..];
        let n = buf.len();
        let whole = parse_reply(buf);
        let at = split.min(n);
        let (two, two_end) = feed_reply(buf, &[at, n]);
        let c = chunk.max(1);
        // Chunked feeding re-scans the pending line on every call: keep it bounded.
        let c = if n / c > 4096 { n / 4096 + 1 } else { c };
        let mut steps: Vec<usize> = (0..n).step_by(c).collect();
        steps.push(n);
        let (chunked, chunk_end) = feed_reply(buf, &steps);
        assert_eq!(two, whole, "reply parser: split at {at} differs");
        assert_eq!(chunked, whole, "reply parser: chunks of {c} differ");
        match whole {
            Ok(Some((reply, used))) => {
                assert!(used > 0 && used <= n);
                // A reply completes exactly when its last byte is in, not before.
                assert_eq!(
                    parse_reply(&buf[..used - 1]),
                    Ok(None),
                    "reply complete before its last byte"
                );
                if at >= used {
                    assert_eq!(two_end, at);
                } else {
                    assert_eq!(two_end, n);
                }
                assert!(chunk_end >= used);
                assert!(depth(&reply) <= simplekv_net::resp::MAX_REPLY_DEPTH);
                let enc = reply.to_bytes();
                let norm = normalize(&reply);
                assert_eq!(
                    parse_reply(&enc),
                    Ok(Some((norm.clone(), enc.len()))),
                    "encode/parse round trip"
                );
                if norm == reply {
                    assert_eq!(
                        &enc[..],
                        &buf[..used],
                        "canonical reply re-encodes differently"
                    );
                }
                pos += used;
            }
            Ok(None) => break,
            Err(e) => {
                check_error(e);
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[ctrl, split, chunk, fill], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let split = if rest.is_empty() {
        0
    } else {
        usize::from(split) * rest.len() / 255
    };
    let expanded = ctrl & 0xc0 == 0xc0;
    let stream: Vec<u8> = if expanded {
        let mut s = rest[..split].to_vec();
        s.resize(split + PROTO_INLINE_MAX_SIZE + 1, fill);
        s.extend_from_slice(&rest[split..]);
        s
    } else {
        rest.to_vec()
    };
    let limits = limits(ctrl);

    requests(&stream, split, usize::from(chunk), &limits, expanded);

    // split_line on the raw bytes: no panic, and its output re-quotes to itself.
    match split_line(&stream) {
        Ok(args) => assert_eq!(split_line(&inline_quoted(&args)), Ok(args)),
        Err(e) => assert_eq!(e, ProtocolError::UnbalancedQuotes),
    }
    // A stream with no newline, terminated by one, is one inline line: the parser's verdict
    // is split_line's on the line without one trailing CR.
    let l = Limits::default();
    if !stream.contains(&b'\n') && stream.first() != Some(&b'*') && stream.len() < l.max_inline_len
    {
        let stripped = stream.strip_suffix(b"\r").unwrap_or(&stream);
        let expected = split_line(stripped);
        let mut line = stream.clone();
        line.push(b'\n');
        let mut p = Parser::new();
        let got = p
            .parse(&line, &l)
            .map(|c| c.expect("a whole line is a complete command").to_vec());
        assert_eq!(got, expected, "inline parse differs from split_line");
    }

    if !expanded {
        replies(&stream, split, usize::from(chunk));
    }
});
