//! The history model: what each client asked a key-value store, when, and what came back.
//!
//! Times are monotonic nanoseconds on one clock shared by all clients of a run (see
//! [`Recorder`]). An operation's interval is `[invoke, complete]`, both ends inclusive: two
//! operations are ordered in real time only when one completes *strictly* before the other is
//! invoked.
//!
//! # Text format
//!
//! One operation per line, fields separated by spaces; blank lines and lines starting with `#`
//! are ignored ([`History::to_text`] writes a `# simplekv history v1` header):
//!
//! ```text
//! <client> <invoke_ns> <complete_ns> <key> read   <outcome> [nil | =<value>]
//! <client> <invoke_ns> <complete_ns> <key> write  =<value> <outcome>
//! <client> <invoke_ns> <complete_ns> <key> incr   <delta> <outcome> [<new value>]
//! <client> <invoke_ns> <complete_ns> <key> delete <outcome> [0 | 1]
//! ```
//!
//! `<outcome>` is `ok`, `fail` or `unknown`; the bracketed result follows `ok` only (required
//! for `read` and `incr`, optional for `delete`, where it is DEL's reply count). For an
//! `unknown` operation `<complete_ns>` is when the client gave up. Keys and values are bytes:
//! printable ASCII is written as is, except `%`, `"` and `#`; every other byte as `%XX`. Values
//! carry a `=` sigil (so `=` alone is the empty value and `nil` stays unambiguous); the empty
//! key is written `""`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// A key of the store.
pub type Key = Vec<u8>;
/// A value of the store.
pub type Value = Vec<u8>;

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// GET: returns the value or nil.
    Read,
    /// SET to this value.
    Write(Value),
    /// INCRBY this delta (INCR is `Incr(1)`): the value must be a decimal i64 (or absent,
    /// counted as 0); returns the new value.
    Incr(i64),
    /// DEL.
    Delete,
}

impl Op {
    /// Whether the operation can change the register (everything but [`Op::Read`]).
    pub fn is_mutation(&self) -> bool {
        !matches!(self, Op::Read)
    }
}

/// The reply of an operation that completed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    /// SET's `+OK`, or a DEL whose reply count was not recorded.
    Done,
    /// GET's reply.
    Value(Option<Value>),
    /// INCR's reply: the new value.
    Int(i64),
    /// DEL's reply: whether the key existed (`:1`) or not (`:0`).
    Deleted(bool),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Completed with this reply: it took effect exactly once, between invocation and
    /// completion.
    Ok(Ret),
    /// Definitely not applied (an error reply such as NOREPLICAS or MOVED, given before the
    /// command was applied). The checkers ignore such operations entirely.
    Fail,
    /// Timeout or lost connection: it may have taken effect, at any time after its invocation,
    /// or never.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation {
    /// The client (process, connection) that issued it; informational.
    pub client: u64,
    pub key: Key,
    pub op: Op,
    /// Monotonic ns when the request was sent.
    pub invoke: u64,
    /// Monotonic ns when the reply arrived (for [`Outcome::Unknown`]: when the client gave up;
    /// the linearizability checker treats it as infinity).
    pub complete: u64,
    pub outcome: Outcome,
}

impl Operation {
    pub fn new(
        client: u64,
        key: impl Into<Key>,
        op: Op,
        invoke: u64,
        complete: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            client,
            key: key.into(),
            op,
            invoke,
            complete,
            outcome,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// The completion time for real-time order: `None` (infinity) unless the operation
    /// completed.
    pub fn definite_completion(&self) -> Option<u64> {
        self.is_ok().then_some(self.complete)
    }

    /// Whether `self` precedes `other` in real time: `self` completed strictly before `other`
    /// was invoked. An operation whose outcome is unknown precedes nothing.
    pub fn precedes(&self, other: &Operation) -> bool {
        self.definite_completion().is_some_and(|c| c < other.invoke)
    }

    /// Why this operation is malformed, if it is.
    fn problem(&self) -> Option<String> {
        if self.complete < self.invoke {
            return Some(format!(
                "completes at {} before its invocation at {}",
                self.complete, self.invoke
            ));
        }
        let Outcome::Ok(ret) = &self.outcome else {
            return None;
        };
        let fits = matches!(
            (&self.op, ret),
            (Op::Read, Ret::Value(_))
                | (Op::Write(_), Ret::Done)
                | (Op::Incr(_), Ret::Int(_))
                | (Op::Delete, Ret::Done | Ret::Deleted(_))
        );
        (!fits).then(|| format!("a {} cannot reply {ret:?}", self.op.verb()))
    }
}

impl Op {
    fn verb(&self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write(_) => "write",
            Op::Incr(_) => "incr",
            Op::Delete => "delete",
        }
    }
}

/// `c3 [1000..2000] key write =v1 ok`: one operation in the text format's vocabulary, with
/// `inf` as the completion of an unknown outcome.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} [{}..", self.client, self.invoke)?;
        match self.outcome {
            Outcome::Unknown => f.write_str("inf")?,
            _ => write!(f, "{}", self.complete)?,
        }
        write!(f, "] {}", Body(self))
    }
}

/// The fields after the times: `<key> <verb> [arg] <outcome> [result]`.
struct Body<'a>(&'a Operation);

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        write!(f, "{} {}", key_token(&op.key), op.op.verb())?;
        match &op.op {
            Op::Write(v) => write!(f, " {}", value_token(v))?,
            Op::Incr(d) => write!(f, " {d}")?,
            Op::Read | Op::Delete => {}
        }
        match &op.outcome {
            Outcome::Ok(ret) => {
                f.write_str(" ok")?;
                match ret {
                    Ret::Done => Ok(()),
                    Ret::Value(v) => write!(f, " {}", read_token(v.as_deref())),
                    Ret::Int(n) => write!(f, " {n}"),
                    Ret::Deleted(existed) => write!(f, " {}", u8::from(*existed)),
                }
            }
            Outcome::Fail => f.write_str(" fail"),
            Outcome::Unknown => f.write_str(" unknown"),
        }
    }
}

/// A malformed history or history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError {
    /// 1-based line of the text (parsing) or 0-based operation index (validation).
    pub at: usize,
    pub line: bool,
    pub msg: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.line { "line" } else { "operation #" };
        write!(f, "history {what}{}: {}", self.at, self.msg)
    }
}

impl std::error::Error for HistoryError {}

/// A whole history: all operations of a run, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Indices of each key's operations, keys in byte order.
    pub fn by_key(&self) -> BTreeMap<&[u8], Vec<usize>> {
        let mut keys: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            keys.entry(op.key.as_slice()).or_default().push(i);
        }
        keys
    }

    /// Checks that every operation is well formed: completes no earlier than it is invoked,
    /// and an `ok` reply matches the kind of operation.
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(msg) = op.problem() {
                return Err(HistoryError {
                    at: i,
                    line: false,
                    msg,
                });
            }
        }
        Ok(())
    }

    /// The history in the text format (see the module documentation).
    pub fn to_text(&self) -> String {
        let mut s = String::from("# simplekv history v1\n");
        for op in &self.ops {
            let _ = writeln!(
                s,
                "{} {} {} {}",
                op.client,
                op.invoke,
                op.complete,
                Body(op)
            );
        }
        s
    }

    /// Parses the text format.
    pub fn parse(text: &str) -> Result<History, HistoryError> {
        let mut h = History::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let op = parse_line(line).map_err(|msg| HistoryError {
                at: n + 1,
                line: true,
                msg,
            })?;
            h.push(op);
        }
        Ok(h)
    }

    /// Writes the text format to `path`.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_text())
    }

    /// Reads a history saved by [`History::save`].
    pub fn load(path: &Path) -> io::Result<History> {
        let text = std::fs::read_to_string(path)?;
        History::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

fn parse_line(line: &str) -> Result<Operation, String> {
    let mut t = line.split_ascii_whitespace();
    let mut next = |what: &str| t.next().ok_or_else(|| format!("missing {what}"));
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("bad {what} {s:?}"));
    let client = num(next("client")?, "client")?;
    let invoke = num(next("invocation time")?, "invocation time")?;
    let complete = num(next("completion time")?, "completion time")?;
    let key = parse_key(next("key")?)?;
    let verb = next("operation")?;
    let op = match verb {
        "read" => Op::Read,
        "write" => Op::Write(parse_value(next("value")?)?),
        "incr" => {
            let d = next("delta")?;
            Op::Incr(d.parse().map_err(|_| format!("bad delta {d:?}"))?)
        }
        "delete" => Op::Delete,
        other => return Err(format!("unknown operation {other:?}")),
    };
    let outcome = match next("outcome")? {
        "ok" => {
            let ret = match &op {
                Op::Read => {
                    let r = next("read result")?;
                    Ret::Value(if r == "nil" {
                        None
                    } else {
                        Some(parse_value(r)?)
                    })
                }
                Op::Write(_) => Ret::Done,
                Op::Incr(_) => {
                    let r = next("incr result")?;
                    Ret::Int(r.parse().map_err(|_| format!("bad incr result {r:?}"))?)
                }
                Op::Delete => match t.next() {
                    None => Ret::Done,
                    Some("0") => Ret::Deleted(false),
                    Some("1") => Ret::Deleted(true),
                    Some(r) => return Err(format!("bad delete count {r:?}")),
                },
            };
            Outcome::Ok(ret)
        }
        "fail" => Outcome::Fail,
        "unknown" => Outcome::Unknown,
        other => return Err(format!("unknown outcome {other:?}")),
    };
    if let Some(extra) = t.next() {
        return Err(format!("unexpected {extra:?} at the end"));
    }
    let op = Operation {
        client,
        key,
        op,
        invoke,
        complete,
        outcome,
    };
    match op.problem() {
        Some(p) => Err(p),
        None => Ok(op),
    }
}

fn escape(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'"' | b'#') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'"' | b'#' => return Err(format!("unescaped {:?} in {s:?}", bytes[i] as char)),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A key as the text format writes it.
pub fn key_token(key: &[u8]) -> String {
    if key.is_empty() {
        return "\"\"".into();
    }
    let mut s = String::with_capacity(key.len());
    escape(key, &mut s);
    s
}

/// A value as the text format writes it: `=` and the escaped bytes.
pub fn value_token(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len() + 1);
    s.push('=');
    escape(v, &mut s);
    s
}

/// A read result as the text format writes it: `nil` or a [`value_token`].
pub fn read_token(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "nil".into(), value_token)
}

fn parse_key(s: &str) -> Result<Key, String> {
    if s == "\"\"" {
        Ok(Vec::new())
    } else {
        unescape(s)
    }
}

fn parse_value(s: &str) -> Result<Value, String> {
    match s.strip_prefix('=') {
        Some(rest) => unescape(rest),
        None => Err(format!("a value starts with '=': {s:?}")),
    }
}

/// Records a history from many client threads: monotonic ns since the recorder was made.
///
/// ```ignore
/// let rec = Recorder::new();
/// let p = rec.invoke(client, key, Op::Write(v));
/// let outcome = /* send, wait */;
/// rec.complete(p, outcome);
/// rec.history().save(&run_dir.join("history.txt"))?;
/// ```
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

/// An invoked operation awaiting its outcome.
#[derive(Debug)]
#[must_use = "complete it with Recorder::complete, or the operation is never recorded"]
pub struct Pending {
    client: u64,
    key: Key,
    op: Op,
    invoke: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Call just before sending the request.
    pub fn invoke(&self, client: u64, key: impl Into<Key>, op: Op) -> Pending {
        Pending {
            client,
            key: key.into(),
            op,
            invoke: self.now(),
        }
    }

    /// Call as soon as the outcome is known (reply received, or the client gave up).
    pub fn complete(&self, p: Pending, outcome: Outcome) {
        let complete = self.now().max(p.invoke);
        let op = Operation {
            client: p.client,
            key: p.key,
            op: p.op,
            invoke: p.invoke,
            complete,
            outcome,
        };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// The operations completed so far.
    pub fn history(&self) -> History {
        History {
            ops: self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut h = History::new();
        let ok = |r| Outcome::Ok(r);
        h.push(Operation::new(
            1,
            "k1",
            Op::Write(b"v1".to_vec()),
            10,
            20,
            ok(Ret::Done),
        ));
        h.push(Operation::new(
            2,
            "k1",
            Op::Read,
            15,
            30,
            ok(Ret::Value(None)),
        ));
        h.push(Operation::new(
            2,
            "k1",
            Op::Read,
            31,
            40,
            ok(Ret::Value(Some(b"v1".to_vec()))),
        ));
        h.push(Operation::new(3, "n", Op::Incr(-5), 1, 2, ok(Ret::Int(-5))));
        h.push(Operation::new(3, "n", Op::Delete, 3, 4, ok(Ret::Done)));
        h.push(Operation::new(
            3,
            "n",
            Op::Delete,
            5,
            6,
            ok(Ret::Deleted(false)),
        ));
        h.push(Operation::new(
            4,
            "n",
            Op::Delete,
            5,
            6,
            ok(Ret::Deleted(true)),
        ));
        h.push(Operation::new(
            4,
            "n",
            Op::Write(b"x".to_vec()),
            7,
            99,
            Outcome::Unknown,
        ));
        h.push(Operation::new(4, "n", Op::Incr(3), 100, 101, Outcome::Fail));
        // Awkward bytes: spaces, sigils, escapes, the word nil, empty key and value, non-UTF-8.
        let weird: Vec<u8> = b"a b%c\"d#e=\n\t\xff nil".to_vec();
        h.push(Operation::new(
            5,
            weird.clone(),
            Op::Write(weird.clone()),
            1,
            2,
            ok(Ret::Done),
        ));
        h.push(Operation::new(
            5,
            "",
            Op::Write(Vec::new()),
            3,
            4,
            ok(Ret::Done),
        ));
        h.push(Operation::new(
            5,
            "",
            Op::Read,
            5,
            6,
            ok(Ret::Value(Some(Vec::new()))),
        ));
        h.push(Operation::new(
            5,
            "nil",
            Op::Read,
            5,
            6,
            ok(Ret::Value(Some(b"nil".to_vec()))),
        ));
        h
    }

    #[test]
    fn text_round_trips() {
        let h = sample();
        let text = h.to_text();
        assert!(text.starts_with("# simplekv history v1\n"), "{text}");
        assert!(text.contains("1 10 20 k1 write =v1 ok\n"), "{text}");
        assert!(text.contains("2 15 30 k1 read ok nil\n"), "{text}");
        assert!(text.contains("4 7 99 n write =x unknown\n"), "{text}");
        assert!(text.contains("3 5 6 n delete ok 0\n"), "{text}");
        assert!(text.contains(" \"\" write = ok\n"), "{text}");
        assert_eq!(History::parse(&text).unwrap(), h);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.txt");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let bad = [
            ("1 2 3 k read ok", "missing read result"),
            ("1 2 3 k read ok v1", "starts with '='"),
            ("1 2 3 k write v1 ok", "starts with '='"),
            ("1 2 3 k incr x ok 1", "bad delta"),
            ("1 2 3 k incr 1 ok", "missing incr result"),
            ("1 2 3 k delete ok 2", "bad delete count"),
            ("1 2 3 k frob ok", "unknown operation"),
            ("1 2 3 k read maybe", "unknown outcome"),
            ("1 2 3 k read fail extra", "unexpected"),
            ("1 5 3 k read fail", "before its invocation"),
            ("1 2 3 k%4 read fail", "bad %-escape"),
            ("x 2 3 k read fail", "bad client"),
        ];
        for (line, msg) in bad {
            let text = format!("# header\n\n{line}\n");
            let err = History::parse(&text).unwrap_err();
            assert_eq!(err.at, 3, "{line}");
            assert!(err.to_string().contains(msg), "{line}: {err}");
        }
    }

    #[test]
    fn validate_rejects_mismatched_replies() {
        let mut h = sample();
        assert!(h.validate().is_ok());
        h.push(Operation::new(
            1,
            "k",
            Op::Read,
            1,
            2,
            Outcome::Ok(Ret::Int(3)),
        ));
        let err = h.validate().unwrap_err();
        assert_eq!(err.at, h.len() - 1);
        h.ops.pop();
        h.push(Operation::new(1, "k", Op::Read, 3, 2, Outcome::Fail));
        assert!(h.validate().is_err());
    }

    #[test]
    fn real_time_order_is_strict_and_unknown_precedes_nothing() {
        let ok = Outcome::Ok(Ret::Done);
        let a = Operation::new(1, "k", Op::Write(b"a".to_vec()), 0, 10, ok.clone());
        let b = Operation::new(2, "k", Op::Write(b"b".to_vec()), 10, 20, ok.clone());
        let c = Operation::new(2, "k", Op::Write(b"b".to_vec()), 11, 20, ok);
        assert!(!a.precedes(&b), "touching intervals are concurrent");
        assert!(a.precedes(&c));
        let u = Operation::new(1, "k", Op::Write(b"a".to_vec()), 0, 10, Outcome::Unknown);
        assert!(!u.precedes(&c));
    }

    #[test]
    fn recorder_records_monotonic_intervals() {
        let rec = Recorder::new();
        std::thread::scope(|s| {
            for c in 0..4u64 {
                let rec = &rec;
                s.spawn(move || {
                    for i in 0..50u64 {
                        let p = rec.invoke(c, format!("k{}", i % 3), Op::Incr(1));
                        rec.complete(p, Outcome::Ok(Ret::Int(1)));
                    }
                });
            }
        });
        let h = rec.history();
        assert_eq!(h.len(), 200);
        assert!(h.validate().is_ok());
        assert_eq!(h.by_key().len(), 3);
    }
}
