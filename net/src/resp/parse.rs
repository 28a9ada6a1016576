//! Incremental RESP2 request parser, compatible with Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` (networking.c), including their protocol error texts.
//!
//! # Usage
//!
//! The connection keeps a read buffer and one [`Parser`]. After every read it calls
//! [`Parser::parse`] with the unconsumed part of the buffer, whose first byte is the start of the
//! next command:
//!
//! ```text
//! let mut start = 0;
//! loop {
//!     match parser.parse(&rbuf[start..], &limits) {
//!         Ok(Some(cmd)) => {
//!             start += cmd.consumed();
//!             if !cmd.is_empty() { dispatch(cmd.iter()); }
//!         }
//!         Ok(None) => break, // read more, then call again
//!         Err(e) => { e.write_reply(&mut wbuf); close(); break; }
//!     }
//! }
//! rbuf.drain(..start);
//! ```
//!
//! # Incremental state
//!
//! A frame may arrive one byte at a time, and a 512 MiB bulk in thousands of reads, so the parser
//! does not re-validate what it has already seen: it remembers which part of the frame is done
//! (the multibulk header, every complete bulk so far, the current bulk's header) and how far it has
//! searched for the line terminator of the line it is waiting for. Each call therefore costs time
//! proportional to the new bytes only. The price is a contract on the caller: between calls that
//! return `Ok(None)`, the bytes already passed must stay at the same offsets of the slice (the slice
//! may only grow at the end; dropping *consumed* bytes in front of it is fine, since offsets are
//! relative to the frame start). If the slice is shorter than what was already validated, the
//! parser notices and starts the frame over; [`Parser::reset`] does the same on demand.
//!
//! # Arguments
//!
//! A multibulk command's arguments are ranges into the caller's buffer (no copy); an inline
//! command's arguments are unescaped into a small scratch buffer inside the parser (inline lines
//! are at most [`Limits::max_inline_len`] bytes). [`Command`] hides the difference.

use std::fmt;
use std::ops::Range;

/// Longest inline request line, and longest multibulk/bulk header line, Redis accepts
/// (`PROTO_INLINE_MAX_SIZE` in server.h).
pub const PROTO_INLINE_MAX_SIZE: usize = 64 * 1024;
/// Redis's default `proto-max-bulk-len`.
pub const DEFAULT_PROTO_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Largest multibulk count accepted by default.
pub const DEFAULT_MAX_MULTIBULK_LEN: usize = 1024 * 1024;
/// Upper bound on argument slots reserved from a declared multibulk count, so that `*1048576`
/// from a client that then sends nothing costs nothing (Redis caps its argv the same way).
const ARGS_PREALLOC_MAX: usize = 1024;
/// Argument storage above this is released after a command so that one huge command does not pin
/// memory on an idle connection.
const ARGS_KEEP_MAX: usize = 4096;
const INLINE_KEEP_MAX: usize = 16 * 1024;

/// Size limits applied while parsing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string length accepted (`proto-max-bulk-len`).
    pub proto_max_bulk_len: usize,
    /// Largest multibulk element count accepted.
    pub max_multibulk_len: usize,
    /// Longest inline command line accepted without its newline.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            proto_max_bulk_len: DEFAULT_PROTO_MAX_BULK_LEN,
            max_multibulk_len: DEFAULT_MAX_MULTIBULK_LEN,
            max_inline_len: PROTO_INLINE_MAX_SIZE,
        }
    }
}

/// A malformed request or reply. The connection answers a request error with
/// [`ProtocolError::write_reply`] (`-ERR Protocol error: <text>`) and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `invalid multibulk length`
    InvalidMultibulkLength,
    /// `expected '$', got 'X'`
    ExpectedDollar(u8),
    /// `invalid bulk length`
    InvalidBulkLength,
    /// `too big mbulk count string`
    TooBigMbulkCount,
    /// `too big bulk count string`
    TooBigBulkCount,
    /// `too big inline request`
    TooBigInline,
    /// `unbalanced quotes in request`
    UnbalancedQuotes,
    /// A bulk payload not followed by CRLF. Redis skips two bytes blindly and then usually
    /// desyncs; failing here names the real problem.
    BulkNotTerminated,
    /// Reply parsing: the first byte of a reply is not one of `+-:$*`.
    InvalidReplyType(u8),
    /// Reply parsing: a line is not terminated by CRLF.
    InvalidReplyLine,
    /// Reply parsing: an integer reply that is not a valid 64-bit integer.
    InvalidReplyInteger,
    /// Reply parsing: a bulk or array length that is not a number, or is below -1.
    InvalidReplyLength,
    /// Reply parsing: arrays nested deeper than [`crate::resp::encode::MAX_REPLY_DEPTH`].
    ReplyTooDeep,
}

impl ProtocolError {
    /// The error text, as bytes. Identical to `Display` except for
    /// [`ProtocolError::ExpectedDollar`], where Redis prints the offending byte raw (with CR and
    /// LF turned into spaces), which may not be UTF-8.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match *self {
            ProtocolError::ExpectedDollar(b) => {
                out.extend_from_slice(b"expected '$', got '");
                out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
                out.push(b'\'');
            }
            ProtocolError::InvalidReplyType(b) => {
                out.extend_from_slice(b"got '");
                out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
                out.extend_from_slice(b"' as reply type byte");
            }
            _ => out.extend_from_slice(self.static_text().as_bytes()),
        }
    }

    /// Appends the whole error reply Redis sends before closing the connection:
    /// `-ERR Protocol error: <text>\r\n`.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR Protocol error: ");
        self.write_text(out);
        out.extend_from_slice(b"\r\n");
    }

    fn static_text(&self) -> &'static str {
        match self {
            ProtocolError::InvalidMultibulkLength => "invalid multibulk length",
            ProtocolError::ExpectedDollar(_) => "expected '$'",
            ProtocolError::InvalidBulkLength => "invalid bulk length",
            ProtocolError::TooBigMbulkCount => "too big mbulk count string",
            ProtocolError::TooBigBulkCount => "too big bulk count string",
            ProtocolError::TooBigInline => "too big inline request",
            ProtocolError::UnbalancedQuotes => "unbalanced quotes in request",
            ProtocolError::BulkNotTerminated => "bulk data not terminated by CRLF",
            ProtocolError::InvalidReplyType(_) => "invalid reply type byte",
            ProtocolError::InvalidReplyLine => "reply line not terminated by CRLF",
            ProtocolError::InvalidReplyInteger => "invalid integer in reply",
            ProtocolError::InvalidReplyLength => "invalid length in reply",
            ProtocolError::ReplyTooDeep => "reply nested too deep",
        }
    }
}

/// Writes a byte inside a quoted message: printable ASCII as is, CR/LF as a space (as Redis's
/// error sanitizer does), anything else as `\xHH` so the text stays valid UTF-8.
fn fmt_byte(f: &mut fmt::Formatter<'_>, b: u8) -> fmt::Result {
    match b {
        b'\r' | b'\n' => f.write_str(" "),
        0x20..=0x7e => write!(f, "{}", char::from(b)),
        _ => write!(f, "\\x{b:02x}"),
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolError::ExpectedDollar(b) => {
                f.write_str("expected '$', got '")?;
                fmt_byte(f, b)?;
                f.write_str("'")
            }
            ProtocolError::InvalidReplyType(b) => {
                f.write_str("got '")?;
                fmt_byte(f, b)?;
                f.write_str("' as reply type byte")
            }
            _ => f.write_str(self.static_text()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Redis's `string2ll`: optional `-`, no `+`, no leading zeros (except `0` itself), no spaces,
/// no overflow. `-0` is rejected, as in Redis.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in Redis: 20 digits plus a sign is the longest valid input.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MIN.unsigned_abs() {
            return None;
        }
        Some(0i64.wrapping_sub_unsigned(v))
    } else {
        i64::try_from(v).ok()
    }
}

/// Where the parser is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// No byte of the frame seen yet.
    #[default]
    Start,
    /// Waiting for the `\n` of an inline line.
    Inline,
    /// Waiting for the complete `*<n>\r\n` line.
    MultibulkLen,
    /// Waiting for the complete `$<len>\r\n` line of the next bulk, which starts at `pos`.
    BulkLen,
    /// Waiting for `len` bytes plus CRLF starting at `pos`.
    BulkData(usize),
    /// A command was returned; its arguments stay readable until the next call.
    Done,
}

enum Scan {
    /// Absolute index of the terminator.
    Found(usize),
    Incomplete,
    TooLong,
}

/// Resumable RESP2 request parser; one per connection. See the module docs for the contract.
#[derive(Debug, Default)]
pub struct Parser {
    phase: Phase,
    /// Offset (from the frame start) of the element being parsed.
    pos: usize,
    /// Bytes from `pos` known to contain no terminator: the resume point of the line search.
    scanned: usize,
    /// Bulks still expected in the current multibulk.
    remaining: usize,
    args: Vec<Range<usize>>,
    /// Unescaped inline arguments; `args` index into it when `inline` is true.
    scratch: Vec<u8>,
    inline: bool,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets any partially parsed frame.
    pub fn reset(&mut self) {
        self.phase = Phase::Start;
        self.pos = 0;
        self.scanned = 0;
        self.remaining = 0;
        self.inline = false;
        if self.args.capacity() > ARGS_KEEP_MAX {
            self.args = Vec::new();
        } else {
            self.args.clear();
        }
        if self.scratch.capacity() > INLINE_KEEP_MAX {
            self.scratch = Vec::new();
        } else {
            self.scratch.clear();
        }
    }

    /// True while a frame is partly parsed (more bytes are awaited to finish it); false
    /// before any byte and after a complete command.
    pub fn mid_frame(&self) -> bool {
        !matches!(self.phase, Phase::Start | Phase::Done)
    }

    /// Parses one command from the start of `buf`.
    ///
    /// * `Ok(Some(cmd))`: a complete command; `cmd.consumed()` bytes of `buf` belong to it. An
    ///   empty command (`*0`, `*-1`, blank inline line) has no arguments and must just be skipped.
    /// * `Ok(None)`: more bytes are needed; call again with the same bytes plus more.
    /// * `Err(e)`: the stream is malformed; reply with `e` and close the connection.
    pub fn parse<'a>(
        &'a mut self,
        buf: &'a [u8],
        limits: &Limits,
    ) -> Result<Option<Command<'a>>, ProtocolError> {
        if self.phase == Phase::Done || buf.len() < self.pos {
            self.reset();
        }
        match self.advance(buf, limits) {
            Ok(Some(consumed)) => {
                self.phase = Phase::Done;
                let data: &[u8] = if self.inline { &self.scratch } else { buf };
                Ok(Some(Command {
                    data,
                    args: &self.args,
                    consumed,
                    inline: self.inline,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn advance(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        loop {
            match self.phase {
                Phase::Start | Phase::Done => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first == b'*'
                        && let Some(consumed) = self.whole_multibulk(buf, limits)
                    {
                        return Ok(Some(consumed));
                    }
                    self.phase = if first == b'*' {
                        Phase::MultibulkLen
                    } else {
                        Phase::Inline
                    };
                    self.pos = 0;
                    self.scanned = 0;
                }
                Phase::Inline => return self.inline_command(buf, limits),
                Phase::MultibulkLen => {
                    let Some(cr) = self.header_line(buf, ProtocolError::TooBigMbulkCount)? else {
                        return Ok(None);
                    };
                    let n = buf
                        .get(1..cr)
                        .and_then(string2ll)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if buf.get(cr + 1) != Some(&b'\n') {
                        return Err(ProtocolError::InvalidMultibulkLength);
                    }
                    let next = cr + 2;
                    // Redis treats every count <= 0 as an empty command, not only -1 (its
                    // protocol test "Negative multibulk length" sends `*-10` and expects PONG on
                    // the next command).
                    if n <= 0 {
                        return Ok(Some(next));
                    }
                    let n = usize::try_from(n)
                        .ok()
                        .filter(|&n| n <= limits.max_multibulk_len)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    self.remaining = n;
                    self.args.reserve(n.min(ARGS_PREALLOC_MAX));
                    self.pos = next;
                    self.scanned = 0;
                    self.phase = Phase::BulkLen;
                }
                Phase::BulkLen => {
                    let Some(cr) = self.header_line(buf, ProtocolError::TooBigBulkCount)? else {
                        return Ok(None);
                    };
                    // Checked only once the whole line is in, like Redis, so the error does not
                    // depend on how the bytes were split into reads.
                    let first = buf.get(self.pos).copied().unwrap_or(b'\r');
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedDollar(first));
                    }
                    let len = buf
                        .get(self.pos + 1..cr)
                        .and_then(string2ll)
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= limits.proto_max_bulk_len)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    if buf.get(cr + 1) != Some(&b'\n') {
                        return Err(ProtocolError::InvalidBulkLength);
                    }
                    self.pos = cr + 2;
                    self.scanned = 0;
                    self.phase = Phase::BulkData(len);
                }
                Phase::BulkData(len) => {
                    let end = self.pos.saturating_add(len);
                    let next = end.saturating_add(2);
                    if buf.len() < next {
                        return Ok(None);
                    }
                    if buf.get(end..next) != Some(&b"\r\n"[..]) {
                        return Err(ProtocolError::BulkNotTerminated);
                    }
                    self.args.push(self.pos..end);
                    self.pos = next;
                    self.remaining = self.remaining.saturating_sub(1);
                    if self.remaining == 0 {
                        return Ok(Some(next));
                    }
                    self.scanned = 0;
                    self.phase = Phase::BulkLen;
                }
            }
        }
    }

    /// The common case in one pass: a whole multibulk frame at the start of `buf`, with
    /// plain decimal lengths (no sign, no leading zero), its count at least 1 and within the
    /// limits. Returns the bytes it takes, with the arguments in `args`. Anything else
    /// (an incomplete frame, an empty command, any malformed or unusual byte) returns `None`
    /// with the parser untouched, and the state machine in `advance` parses the frame from
    /// its start, with the same outcome it would have had for the frames this accepts.
    fn whole_multibulk(&mut self, buf: &[u8], limits: &Limits) -> Option<usize> {
        let (n, mut at) = plain_length(buf, 1)?;
        if n == 0 || n > limits.max_multibulk_len {
            return None;
        }
        self.args.reserve(n.min(ARGS_PREALLOC_MAX));
        for _ in 0..n {
            let bulk = (buf.get(at) == Some(&b'$'))
                .then(|| plain_length(buf, at + 1))
                .flatten()
                .filter(|&(len, _)| len <= limits.proto_max_bulk_len)
                .and_then(|(len, data)| {
                    let end = data.checked_add(len)?;
                    (buf.get(end..end.checked_add(2)?)? == b"\r\n").then_some(data..end)
                });
            let Some(range) = bulk else {
                self.args.clear();
                return None;
            };
            at = range.end + 2;
            self.args.push(range);
        }
        Some(at)
    }

    /// Looks for `needle` in the line starting at `pos`, resuming where the previous call stopped.
    ///
    /// Redis fails a line once more than `max` bytes are buffered without the terminator. Only
    /// looking at the first `max + 1` bytes gives the same verdict however the input was split
    /// into reads (Redis itself may accept a longer line that happens to arrive in one read).
    fn scan(&mut self, buf: &[u8], needle: u8, max: usize) -> Scan {
        let avail = buf.get(self.pos..).unwrap_or_default();
        let window = avail.len().min(max.saturating_add(1));
        let from = self.scanned.min(window);
        let hit = avail
            .get(from..window)
            .and_then(|w| w.iter().position(|&b| b == needle));
        match hit {
            Some(i) => {
                self.scanned = from + i;
                Scan::Found(self.pos + from + i)
            }
            None => {
                self.scanned = window;
                if avail.len() > max {
                    Scan::TooLong
                } else {
                    Scan::Incomplete
                }
            }
        }
    }

    /// Finds the `\r` ending a `*`/`$` header line; `Some` only once the byte after it is in too.
    fn header_line(
        &mut self,
        buf: &[u8],
        too_big: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        match self.scan(buf, b'\r', PROTO_INLINE_MAX_SIZE) {
            Scan::Found(cr) if cr + 1 < buf.len() => Ok(Some(cr)),
            Scan::Found(_) | Scan::Incomplete => Ok(None),
            Scan::TooLong => Err(too_big),
        }
    }

    fn inline_command(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, ProtocolError> {
        match self.scan(buf, b'\n', limits.max_inline_len) {
            Scan::Found(nl) => {
                let line = buf.get(..nl).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.inline = true;
                split_args(line, &mut self.scratch, &mut self.args)?;
                Ok(Some(nl + 1))
            }
            Scan::Incomplete => Ok(None),
            Scan::TooLong => Err(ProtocolError::TooBigInline),
        }
    }
}

/// A length line's number from `buf[from]` up to its `\r\n`, when it is plain: `0`, or 1 to
/// `PLAIN_DIGITS` digits without a leading zero. Returns it and where the line ends (after
/// the `\n`).
fn plain_length(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    // As many digits as cannot overflow a usize.
    const PLAIN_DIGITS: usize = if usize::BITS >= 64 { 18 } else { 9 };
    let digits = buf.get(from..)?;
    let mut v = 0usize;
    for (i, &d) in digits.iter().enumerate().take(PLAIN_DIGITS + 1) {
        match d {
            b'0'..=b'9' if !(i == 1 && v == 0) => v = v * 10 + usize::from(d - b'0'),
            b'\r' if i > 0 => {
                return (digits.get(i + 1) == Some(&b'\n')).then_some((v, from + i + 2));
            }
            _ => return None,
        }
    }
    None
}

/// C's `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits a line into arguments with Redis's `sdssplitargs` quoting (inline commands, and what
/// redis-cli and `simplekv cli` accept at their prompt). Unbalanced quotes are an error.
pub fn split_line(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut scratch = Vec::new();
    let mut ranges = Vec::new();
    split_args(line, &mut scratch, &mut ranges)?;
    Ok(ranges
        .into_iter()
        .map(|r| scratch.get(r).unwrap_or_default().to_vec())
        .collect())
}

/// Port of Redis's `sdssplitargs`, appending unescaped arguments to `scratch` and their ranges to
/// `args`.
///
/// `sdssplitargs` works on a C string, so a NUL byte ends the line; reading past the end is
/// modelled by `at` returning 0, which keeps the branch structure identical to the C code.
fn split_args(
    line: &[u8],
    scratch: &mut Vec<u8>,
    args: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(n) => line.get(..n).unwrap_or_default(),
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(at(p)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        let start = scratch.len();
        let (mut in_dq, mut in_sq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_dq {
                let hex = hex_val(at(p + 2)).zip(hex_val(at(p + 3)));
                if let (b'\\', b'x', Some((hi, lo))) = (c, at(p + 1), hex) {
                    scratch.push(hi * 16 + lo);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    scratch.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // A closing quote glued to the next token is rejected, not concatenated.
                    let next = at(p + 1);
                    if next != 0 && !is_space(next) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    scratch.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    scratch.push(b'\'');
                } else if c == b'\'' {
                    let next = at(p + 1);
                    if next != 0 && !is_space(next) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    scratch.push(c);
                }
            } else {
                // Unlike the blank skipping above, only these end an unquoted token (\v and \f
                // become part of it), exactly as in sdssplitargs.
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => scratch.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(start..scratch.len());
    }
}

/// One parsed command, borrowed from the [`Parser`] and the buffer it was parsed from.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    data: &'a [u8],
    args: &'a [Range<usize>],
    consumed: usize,
    inline: bool,
}

impl<'a> Command<'a> {
    /// Bytes of the buffer this command occupied, including any trailing CRLF.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True for an empty command, which the caller skips.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.args.get(i).and_then(|r| self.data.get(r.clone()))
    }

    pub fn iter(&self) -> Args<'a> {
        Args {
            data: self.data,
            ranges: self.args.iter(),
        }
    }

    /// For multibulk commands, the argument ranges within the buffer passed to
    /// [`Parser::parse`], for zero-copy slicing. `None` for inline commands, whose unescaped
    /// arguments live in the parser.
    pub fn buf_ranges(&self) -> Option<&'a [Range<usize>]> {
        (!self.inline).then_some(self.args)
    }

    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Owned copies of the arguments.
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl<'a> IntoIterator for Command<'a> {
    type Item = &'a [u8];
    type IntoIter = Args<'a>;
    fn into_iter(self) -> Args<'a> {
        self.iter()
    }
}

/// Iterator over a [`Command`]'s arguments.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    data: &'a [u8],
    ranges: std::slice::Iter<'a, Range<usize>>,
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let r = self.ranges.next()?;
        Some(self.data.get(r.clone()).unwrap_or_default())
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ranges.size_hint()
    }
}

impl ExactSizeIterator for Args<'_> {}

/// Stateless convenience form of [`Parser::parse`] with owned arguments: parses one command from
/// the start of `buf` into `out` (cleared first) and returns the bytes consumed. Re-validates the
/// whole frame on every call, so a connection should hold a [`Parser`] instead.
pub fn parse_command(
    buf: &[u8],
    limits: &Limits,
    out: &mut Vec<Vec<u8>>,
) -> Result<Option<usize>, ProtocolError> {
    out.clear();
    let mut parser = Parser::new();
    let Some(cmd) = parser.parse(buf, limits)? else {
        return Ok(None);
    };
    out.extend(cmd.iter().map(<[u8]>::to_vec));
    Ok(Some(cmd.consumed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Args = Vec<Vec<u8>>;
    type Outcome = Result<Vec<Args>, (Vec<Args>, ProtocolError)>;

    /// Parses every complete command in `input`, feeding it `chunk` bytes at a time the way a
    /// connection would (appending to a buffer and draining consumed bytes). Empty commands are
    /// kept (as empty Vecs) so skipping is tested too.
    fn feed(input: &[u8], chunk: usize, limits: &Limits) -> Outcome {
        let mut parser = Parser::new();
        let mut buf = Vec::new();
        let mut cmds = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match parser.parse(&buf, limits) {
                    Ok(Some(cmd)) => {
                        let n = cmd.consumed();
                        assert!(n > 0 && n <= buf.len());
                        cmds.push(cmd.to_vec());
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => return Err((cmds, e)),
                }
            }
        }
        Ok(cmds)
    }

    fn all(input: &[u8]) -> Outcome {
        feed(input, usize::MAX, &Limits::default())
    }

    fn one(input: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
        let mut parser = Parser::new();
        Ok(parser
            .parse(input, &Limits::default())?
            .map(|c| (c.to_vec(), c.consumed())))
    }

    fn err(input: &[u8]) -> ProtocolError {
        match all(input) {
            Err((_, e)) => e,
            Ok(c) => panic!("expected an error for {input:?}, got {c:?}"),
        }
    }

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
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

    #[test]
    fn single_multibulk() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let (a, n) = one(input).unwrap().unwrap();
        assert_eq!(a, args(&["SET", "key", "value"]));
        assert_eq!(n, input.len());
    }

    #[test]
    fn leaves_following_bytes_alone() {
        let input = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI";
        let (a, n) = one(input).unwrap().unwrap();
        assert_eq!(a, args(&["PING"]));
        assert_eq!(n, 14);
        assert_eq!(one(&input[n..]).unwrap(), None);
    }

    #[test]
    fn multibulk_ranges_point_into_buffer() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut p = Parser::new();
        let cmd = p.parse(input, &Limits::default()).unwrap().unwrap();
        assert!(!cmd.is_inline());
        assert_eq!(cmd.buf_ranges().unwrap(), &[8..11, 17..18]);
        assert_eq!(cmd.get(0), Some(&b"GET"[..]));
        assert_eq!(cmd.get(2), None);
        assert_eq!(cmd.iter().len(), 2);
    }

    #[test]
    fn binary_payloads() {
        let payload = b"\r\n\0*$\r\n\xff".to_vec();
        let input = multibulk(&[b"SET".to_vec(), b"k\r\n".to_vec(), payload.clone()]);
        let cmds = all(&input).unwrap();
        assert_eq!(
            cmds,
            vec![vec![b"SET".to_vec(), b"k\r\n".to_vec(), payload]]
        );
        assert_eq!(feed(&input, 1, &Limits::default()).unwrap(), cmds);
    }

    #[test]
    fn empty_bulk_and_empty_commands() {
        assert_eq!(
            all(b"*1\r\n$0\r\n\r\n").unwrap(),
            vec![vec![Vec::<u8>::new()]]
        );
        assert_eq!(one(b"*0\r\n").unwrap(), Some((vec![], 4)));
        assert_eq!(one(b"*-1\r\n").unwrap(), Some((vec![], 5)));
        // Redis's "Negative multibulk length" test: any negative count is an empty command.
        assert_eq!(
            all(b"*-10\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![vec![], args(&["PING"])]
        );
    }

    #[test]
    fn mid_frame_is_true_only_between_the_first_and_last_byte_of_a_frame() {
        let limits = Limits::default();
        let frame = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
        let mut p = Parser::new();
        assert!(!p.mid_frame());
        for cut in 1..frame.len() {
            let mut p = Parser::new();
            assert!(p.parse(&frame[..cut], &limits).unwrap().is_none());
            assert!(p.mid_frame(), "cut at {cut}");
            assert!(p.parse(frame, &limits).unwrap().is_some());
            assert!(!p.mid_frame(), "after the frame completed (cut at {cut})");
        }
        assert!(p.parse(b"PING\r\n", &limits).unwrap().is_some());
        assert!(!p.mid_frame());
        assert!(p.parse(b"PI", &limits).unwrap().is_none());
        assert!(p.mid_frame());
    }

    #[test]
    fn pipelined_byte_at_a_time_equals_all_at_once() {
        let mut input = Vec::new();
        input.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$4\r\n\r\n\r\n\r\n");
        input.extend_from_slice(b"PING\r\n");
        input.extend_from_slice(b"\r\n\n   \n");
        input.extend_from_slice(b"*0\r\n");
        input.extend_from_slice(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\n");
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
        input.extend_from_slice(b"*-1\r\n");
        let whole = all(&input).unwrap();
        assert_eq!(whole.len(), 9);
        assert_eq!(whole[1], args(&["PING"]));
        assert_eq!(whole[6], args(&["set", "a b", "c'd", "A\n"]));
        for chunk in 1..input.len() {
            assert_eq!(
                feed(&input, chunk, &Limits::default()).unwrap(),
                whole,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn inline_basic() {
        assert_eq!(one(b"PING\r\n").unwrap(), Some((args(&["PING"]), 6)));
        assert_eq!(one(b"PING\n").unwrap(), Some((args(&["PING"]), 5)));
        assert_eq!(one(b"PING").unwrap(), None);
        assert_eq!(one(b"PING\r").unwrap(), None);
        assert_eq!(
            one(b"  set\tkey   value  \r\n").unwrap().unwrap().0,
            args(&["set", "key", "value"])
        );
        // Only one CR is part of the line ending; a second is a separator inside the line.
        assert_eq!(one(b"a b\r\r\n").unwrap().unwrap().0, args(&["a", "b"]));
        // Inline commands may start with any byte but '*'.
        assert_eq!(one(b"$3\r\n").unwrap().unwrap().0, args(&["$3"]));
        let mut p = Parser::new();
        let cmd = p.parse(b"GET k\n", &Limits::default()).unwrap().unwrap();
        assert!(cmd.is_inline());
        assert_eq!(cmd.buf_ranges(), None);
    }

    #[test]
    fn inline_empty_lines_are_empty_commands() {
        assert_eq!(one(b"\r\n").unwrap(), Some((vec![], 2)));
        assert_eq!(one(b"\n").unwrap(), Some((vec![], 1)));
        assert_eq!(one(b" \t \r\n").unwrap(), Some((vec![], 5)));
        assert_eq!(one(b"\x0b\x0c\n").unwrap(), Some((vec![], 3)));
    }

    #[test]
    fn inline_quoting() {
        let parse = |s: &[u8]| one(s).unwrap().unwrap().0;
        assert_eq!(
            parse(b"set \"hello world\" 'single quoted'\n"),
            args(&["set", "hello world", "single quoted"])
        );
        assert_eq!(
            parse(b"\"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n"),
            vec![b"\n\r\t\x08\x07\\\"q".to_vec()]
        );
        assert_eq!(parse(b"\"\\x41\\x6a\\xfF\"\n"), vec![b"Aj\xff".to_vec()]);
        // Incomplete or bad hex escapes fall back to the generic escape: "\x" -> "x".
        assert_eq!(parse(b"\"\\x4\"\n"), args(&["x4"]));
        assert_eq!(parse(b"\"\\xZZ\"\n"), args(&["xZZ"]));
        // Single quotes only know \'.
        assert_eq!(parse(b"'a\\'b\\n'\n"), vec![b"a'b\\n".to_vec()]);
        assert_eq!(parse(b"\"\" ''\n"), args(&["", ""]));
        // A quote inside an unquoted token opens a quoted section of the same token.
        assert_eq!(parse(b"foo\"bar baz\" x\n"), args(&["foobar baz", "x"]));
        // \v and \f separate tokens only while skipping blanks.
        assert_eq!(parse(b"a\x0bb\n"), vec![b"a\x0bb".to_vec()]);
        assert_eq!(parse(b"\"a\"\tb\n"), args(&["a", "b"]));
        assert_eq!(parse(b"'a'\x0bb\n"), args(&["a", "b"]));
        // sdssplitargs sees a C string: a NUL ends the line.
        assert_eq!(parse(b"GET a\0b c\n"), args(&["GET", "a"]));
        assert_eq!(parse(b"\0 x\n"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for bad in [
            &b"set \"\"\"test-key\"\"\" test-value\r\n"[..],
            b"\"abc\n",
            b"'abc\n",
            b"\"abc\"def\n",
            b"'abc'def\n",
            b"\"abc\\\"\n",
            b"\"a\0\"\n",
        ] {
            assert_eq!(err(bad), ProtocolError::UnbalancedQuotes, "{bad:?}");
        }
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "unbalanced quotes in request"
        );
    }

    #[test]
    fn inline_length_limit() {
        let limits = Limits {
            max_inline_len: 10,
            ..Limits::default()
        };
        let run = |input: &[u8]| feed(input, usize::MAX, &limits);
        assert_eq!(run(b"0123456789\n").unwrap().len(), 1);
        assert_eq!(
            run(b"0123456789\r\n").unwrap_err().1,
            ProtocolError::TooBigInline
        );
        assert_eq!(run(b"0123456789").unwrap(), Vec::<Vec<Vec<u8>>>::new());
        assert_eq!(
            run(b"0123456789a").unwrap_err().1,
            ProtocolError::TooBigInline
        );
        assert_eq!(
            run(b"0123456789a\n").unwrap_err().1,
            ProtocolError::TooBigInline
        );
        for chunk in 1..12 {
            assert_eq!(
                feed(b"0123456789a\n", chunk, &limits).unwrap_err().1,
                ProtocolError::TooBigInline
            );
        }
        let big = vec![b'a'; PROTO_INLINE_MAX_SIZE + 1];
        assert_eq!(err(&big), ProtocolError::TooBigInline);
        assert_eq!(
            ProtocolError::TooBigInline.to_string(),
            "too big inline request"
        );
        let mut ok = vec![b'a'; PROTO_INLINE_MAX_SIZE];
        ok.push(b'\n');
        assert_eq!(all(&ok).unwrap().len(), 1);
        // Redis's protocol desync regression tests: garbage with no terminator must fail.
        for seq in [&b"\x00"[..], b"*\x00", b"$\x00"] {
            let mut input = seq.to_vec();
            input.extend(b"payload".repeat(10_000));
            assert!(matches!(
                err(&input),
                ProtocolError::TooBigInline | ProtocolError::TooBigMbulkCount
            ));
        }
    }

    #[test]
    fn invalid_multibulk_length() {
        for bad in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*-0\r\n",
            b"*1048577\r\n",
            b"*3000000000\r\n",
            b"*99999999999999999999\r\n",
            b"*1\rX",
        ] {
            assert_eq!(err(bad), ProtocolError::InvalidMultibulkLength, "{bad:?}");
        }
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "invalid multibulk length"
        );
        assert_eq!(one(b"*1048576\r\n").unwrap(), None);
        let limits = Limits {
            max_multibulk_len: 2,
            ..Limits::default()
        };
        let two = multibulk(&args(&["a", "b"]));
        assert_eq!(feed(&two, 1, &limits).unwrap().len(), 1);
        let three = multibulk(&args(&["a", "b", "c"]));
        assert_eq!(
            feed(&three, 1, &limits).unwrap_err().1,
            ProtocolError::InvalidMultibulkLength
        );
    }

    #[test]
    fn expected_dollar() {
        let e = err(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n");
        assert_eq!(e, ProtocolError::ExpectedDollar(b'f'));
        assert_eq!(e.to_string(), "expected '$', got 'f'");
        assert_eq!(err(b"*1\r\nfoo\r\n").to_string(), "expected '$', got 'f'");
        // Like Redis, the check waits for a complete line.
        assert_eq!(one(b"*1\r\nfoo").unwrap(), None);
        assert_eq!(err(b"*1\r\n\r\n"), ProtocolError::ExpectedDollar(b'\r'));
        assert_eq!(
            ProtocolError::ExpectedDollar(b'\r').to_string(),
            "expected '$', got ' '"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(0xff).to_string(),
            "expected '$', got '\\xff'"
        );
        let mut out = Vec::new();
        ProtocolError::ExpectedDollar(0xff).write_reply(&mut out);
        assert_eq!(out, b"-ERR Protocol error: expected '$', got '\xff'\r\n");
    }

    #[test]
    fn invalid_bulk_length() {
        for bad in [
            &b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$1\rXa\r\n",
        ] {
            assert_eq!(err(bad), ProtocolError::InvalidBulkLength, "{bad:?}");
        }
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "invalid bulk length"
        );
        assert_eq!(one(b"*1\r\n$536870912\r\n").unwrap(), None);
        let limits = Limits {
            proto_max_bulk_len: 3,
            ..Limits::default()
        };
        assert_eq!(
            feed(b"*1\r\n$3\r\nabc\r\n", 1, &limits).unwrap(),
            vec![args(&["abc"])]
        );
        assert_eq!(
            feed(b"*1\r\n$4\r\n", 1, &limits).unwrap_err().1,
            ProtocolError::InvalidBulkLength
        );
    }

    #[test]
    fn too_big_count_strings() {
        // Like Redis, the limit counts the whole unterminated line, type byte included.
        let mut input = b"*".to_vec();
        input.extend(vec![b'1'; PROTO_INLINE_MAX_SIZE - 1]);
        assert_eq!(one(&input).unwrap(), None);
        input.push(b'1');
        assert_eq!(err(&input), ProtocolError::TooBigMbulkCount);
        assert_eq!(
            ProtocolError::TooBigMbulkCount.to_string(),
            "too big mbulk count string"
        );

        let mut input = b"*1\r\n$".to_vec();
        input.extend(vec![b'1'; PROTO_INLINE_MAX_SIZE - 1]);
        assert_eq!(one(&input).unwrap(), None);
        input.push(b'1');
        assert_eq!(err(&input), ProtocolError::TooBigBulkCount);
        assert_eq!(
            ProtocolError::TooBigBulkCount.to_string(),
            "too big bulk count string"
        );
        assert_eq!(
            feed(&input, 1000, &Limits::default()).unwrap_err().1,
            ProtocolError::TooBigBulkCount
        );
    }

    #[test]
    fn bulk_not_terminated() {
        assert_eq!(err(b"*1\r\n$3\r\nfooXY"), ProtocolError::BulkNotTerminated);
        assert_eq!(
            err(b"*1\r\n$3\r\nfoo\r\r"),
            ProtocolError::BulkNotTerminated
        );
        assert_eq!(one(b"*1\r\n$3\r\nfoo\r").unwrap(), None);
        let mut out = Vec::new();
        ProtocolError::BulkNotTerminated.write_reply(&mut out);
        assert_eq!(
            out,
            b"-ERR Protocol error: bulk data not terminated by CRLF\r\n"
        );
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        let mut p = Parser::new();
        assert!(
            p.parse(b"*1048576\r\n$536870912\r\nabc", &Limits::default())
                .unwrap()
                .is_none()
        );
        assert!(p.args.capacity() <= ARGS_PREALLOC_MAX);
        assert!(p.scratch.capacity() == 0);
    }

    #[test]
    fn big_bulk_fed_in_small_pieces() {
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let input = multibulk(&[b"SET".to_vec(), b"k".to_vec(), payload.clone()]);
        let cmds = feed(&input, 1, &Limits::default()).unwrap();
        assert_eq!(cmds, vec![vec![b"SET".to_vec(), b"k".to_vec(), payload]]);
    }

    #[test]
    fn many_args_fed_in_small_pieces() {
        let list: Vec<Vec<u8>> = (0..100_000u32)
            .map(|i| i.to_string().into_bytes())
            .collect();
        let input = multibulk(&list);
        assert_eq!(feed(&input, 3, &Limits::default()).unwrap(), vec![list]);
    }

    #[test]
    fn long_inline_line_fed_byte_at_a_time() {
        let mut input = vec![b'x'; PROTO_INLINE_MAX_SIZE];
        input.push(b'\n');
        assert_eq!(
            feed(&input, 1, &Limits::default()).unwrap(),
            vec![vec![vec![b'x'; PROTO_INLINE_MAX_SIZE]]]
        );
    }

    #[test]
    fn shrunk_buffer_restarts_frame() {
        let mut p = Parser::new();
        let l = Limits::default();
        assert!(p.parse(b"*2\r\n$3\r\nGET\r\n$1", &l).unwrap().is_none());
        assert!(p.parse(b"*1\r\n", &l).unwrap().is_none());
        let cmd = p.parse(b"*1\r\n$4\r\nPING\r\n", &l).unwrap().unwrap();
        assert_eq!(cmd.to_vec(), args(&["PING"]));
        p.reset();
        assert!(p.parse(b"", &l).unwrap().is_none());
    }

    #[test]
    fn parser_usable_after_error() {
        let mut p = Parser::new();
        let l = Limits::default();
        assert!(p.parse(b"*x\r\n", &l).is_err());
        let cmd = p.parse(b"PING\n", &l).unwrap().unwrap();
        assert_eq!(cmd.to_vec(), args(&["PING"]));
    }

    #[test]
    fn stateless_parse_command() {
        let mut out = vec![b"stale".to_vec()];
        let l = Limits::default();
        assert_eq!(parse_command(b"*1\r\n$1\r\n", &l, &mut out), Ok(None));
        assert!(out.is_empty());
        assert_eq!(
            parse_command(b"*1\r\n$1\r\na\r\nrest", &l, &mut out),
            Ok(Some(11))
        );
        assert_eq!(out, args(&["a"]));
        assert_eq!(
            parse_command(b"*1\r\nx\r\n", &l, &mut out),
            Err(ProtocolError::ExpectedDollar(b'x'))
        );
    }

    #[test]
    fn string2ll_matches_redis() {
        for (s, v) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("99", Some(99)),
            ("-1", Some(-1)),
            ("-99", Some(-99)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775809", None),
            ("9223372036854775808", None),
            ("18446744073709551616", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("01", None),
            ("-0", None),
            ("-", None),
            ("", None),
            ("00", None),
            ("1a", None),
            ("000000000000000000001", None),
        ] {
            assert_eq!(string2ll(s.as_bytes()), v, "{s:?}");
        }
    }

    /// Quotes an argument so that sdssplitargs gives it back unchanged.
    fn quote_inline(arg: &[u8]) -> Vec<u8> {
        let mut out = b"\"".to_vec();
        for &b in arg {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
        out.push(b'"');
        out
    }

    /// Lengths at the edges of the one-pass path (digits that fit or overflow, limits of 0
    /// and exact), parsed whole and byte by byte: the same outcome.
    #[test]
    fn whole_frames_at_length_edges_parse_as_byte_by_byte() {
        let lengths = [
            "0".to_string(),
            "1".into(),
            "9".repeat(18),
            "9".repeat(19),
            "1".to_string() + &"0".repeat(18),
            i64::MAX.to_string(),
            u64::MAX.to_string(),
            "18446744073709551616".into(),
            "4294967299".into(),
        ];
        for count in ["1", "2", "0", "-1", "01"] {
            for len in &lengths {
                for limit in [0, 1, 3, usize::MAX] {
                    let input = format!("*{count}\r\n${len}\r\nabc\r\n$3\r\nxyz\r\n");
                    let limits = Limits {
                        proto_max_bulk_len: limit,
                        max_multibulk_len: limit,
                        ..Limits::default()
                    };
                    assert_eq!(
                        feed(input.as_bytes(), usize::MAX, &limits),
                        feed(input.as_bytes(), 1, &limits),
                        "{input:?} with limit {limit}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn multibulk_roundtrip(
            list in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..12),
            split in any::<prop::sample::Index>(),
        ) {
            let input = multibulk(&list);
            let mut p = Parser::new();
            let l = Limits::default();
            let cmd = p.parse(&input, &l).unwrap().unwrap();
            prop_assert_eq!(cmd.consumed(), input.len());
            prop_assert_eq!(cmd.to_vec(), list.clone());

            let at = split.index(input.len());
            let mut p = Parser::new();
            prop_assert!(p.parse(&input[..at], &l).unwrap().is_none());
            let cmd = p.parse(&input, &l).unwrap().unwrap();
            prop_assert_eq!(cmd.consumed(), input.len());
            prop_assert_eq!(cmd.to_vec(), list);
        }

        /// The one-pass path for whole frames (taken when a whole frame is in the buffer)
        /// and the state machine (the only path when bytes arrive one at a time) agree on
        /// every input: valid frames, lengths written oddly (leading zero, sign, space, none, off
        /// by one), bytes changed to protocol characters, and limits small enough to be hit.
        #[test]
        fn whole_frames_parse_as_byte_by_byte(
            cmds in prop::collection::vec(
                prop::collection::vec((prop::collection::vec(any::<u8>(), 0..12), 0..13u8), 0..5),
                1..5),
            count_style in 0..13u8,
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(b"*$\r\n0123-+x ".to_vec())),
                0..3),
            small in any::<bool>(),
        ) {
            // Styles 0-5 write the length as it is; the others change it.
            fn len_text(n: usize, style: u8) -> String {
                match style {
                    6 => format!("0{n}"),
                    7 => format!("-{n}"),
                    8 => format!("+{n}"),
                    9 => format!("{n} "),
                    10 => format!("{}", n + 1),
                    11 => format!("{}", n.saturating_sub(1)),
                    12 => String::new(),
                    _ => n.to_string(),
                }
            }
            let mut input = Vec::new();
            for c in &cmds {
                input.extend_from_slice(format!("*{}\r\n", len_text(c.len(), count_style)).as_bytes());
                for (a, style) in c {
                    input.extend_from_slice(format!("${}\r\n", len_text(a.len(), *style)).as_bytes());
                    input.extend_from_slice(a);
                    input.extend_from_slice(b"\r\n");
                }
            }
            for (at, b) in edits {
                let i = at.index(input.len());
                input[i] = b;
            }
            let limits = if small {
                Limits { proto_max_bulk_len: 6, max_multibulk_len: 3, ..Limits::default() }
            } else {
                Limits::default()
            };
            prop_assert_eq!(feed(&input, usize::MAX, &limits), feed(&input, 1, &limits));
        }

        #[test]
        fn pipelined_roundtrip_any_chunking(
            cmds in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5), 1..6),
            chunk in 1usize..64,
        ) {
            let input: Vec<u8> = cmds.iter().flat_map(|c| multibulk(c)).collect();
            prop_assert_eq!(feed(&input, chunk, &Limits::default()).unwrap(), cmds);
        }

        #[test]
        fn inline_roundtrip(
            list in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..8),
        ) {
            let mut line = Vec::new();
            for a in &list {
                line.extend(quote_inline(a));
                line.push(b' ');
            }
            line.extend_from_slice(b"\r\n");
            prop_assert_eq!(all(&line).unwrap(), vec![list]);
        }

        #[test]
        fn random_bytes_never_panic_and_chunking_is_irrelevant(
            input in prop::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..20,
        ) {
            let l = Limits { max_inline_len: 50, ..Limits::default() };
            let whole = feed(&input, usize::MAX, &l);
            prop_assert_eq!(feed(&input, chunk, &l), whole);
        }

        #[test]
        fn protocolish_bytes_never_panic_and_chunking_is_irrelevant(
            input in prop::collection::vec(
                prop::sample::select(b"*$\r\n0123-456789 \"'\\xaAzq\0".to_vec()), 0..200),
            chunk in 1usize..20,
        ) {
            let l = Limits { max_inline_len: 50, ..Limits::default() };
            let whole = feed(&input, usize::MAX, &l);
            prop_assert_eq!(feed(&input, chunk, &l), whole);
        }
    }
}
