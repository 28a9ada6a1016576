//! Linearizability of one key's sub-history against a single-register model, by the
//! Wing–Gong / Lowe search (WGL) with Lowe's memoization of `(linearized set, state)`.
//!
//! Keys are independent registers, so a history is linearizable iff every key's sub-history is
//! (locality); the caller ([`super::report::check`]) partitions by key, as Porcupine does.
//!
//! The register holds nothing, a canonical decimal `i64` (what INCR reads and writes, exactly
//! the strings simplekv's `string2ll` accepts) or other bytes (interned per key). Operations:
//!
//! | operation | allowed from state `s` | new state |
//! |---|---|---|
//! | read → `r` | `s == r` | `s` |
//! | write `v` | always | `v` |
//! | delete (→ existed?) | always (`existed == (s != nil)` when the count was recorded) | nil |
//! | incr `d` → `r` | `s` is nil or an integer `n`, `n + d` does not overflow, `r == n + d` | `n + d` |
//!
//! `fail` operations are left out (definitely not applied). `unknown` operations have their
//! completion at infinity and need not be linearized at all; an unknown read is left out (it
//! changes nothing), an unknown incr's reply is unconstrained.
//!
//! The search walks an event list (invocations and completions in time order, an invocation
//! before a completion at the same nanosecond, so touching intervals count as concurrent).
//! At an invocation it tries to linearize that operation next; reaching the completion of an
//! operation that is still not linearized is a dead end and it backtracks. A configuration is
//! explored once: `(bitset of linearized operations, register state)` goes into a hash set.
//!
//! On top of plain WGL, each step proven to lose no linearization (see the items' docs):
//!
//! - unknown operations are tried only where no required one fits (`search`), and only
//!   while something that could observe their effect is still to come (`Observers`);
//! - a read that fits is placed at once, with no alternative explored (`search`);
//! - unknown operations with the same step are interchangeable, as are writes of values no
//!   remaining read returns: the memo counts them per class instead of naming them, and a
//!   configuration that used no more of any class subsumes the other (`Pool`, `Memo`).
//!
//! `docs/VERIFICATION.md` ("The checker") has the model, the arguments and the limits.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use super::history::{Op, Operation, Outcome, Ret, value_token};

/// How much a search may spend before it gives up with [`Verdict::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Distinct configurations explored (entries added to the memo).
    pub max_states: u64,
    /// Wall time of one key's search.
    pub max_time: Duration,
    /// Approximate bytes of the memo table (each entry holds a bitset of the key's
    /// operations), so a long sub-history cannot exhaust memory before `max_states`.
    pub max_memory: usize,
}

impl Default for Budget {
    /// Two million configurations, one minute, 1 GiB per key.
    fn default() -> Budget {
        Budget {
            max_states: 2_000_000,
            max_time: Duration::from_secs(60),
            max_memory: 1 << 30,
        }
    }
}

impl Budget {
    /// No limit at all (tests on small histories).
    pub const UNLIMITED: Budget = Budget {
        max_states: u64::MAX,
        max_time: Duration::MAX,
        max_memory: usize::MAX,
    };
}

/// The result of checking one key.
#[derive(Debug, Clone)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Box<Anomaly>),
    /// The budget ran out (or the input was malformed) before an answer: the reason.
    Unknown(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::NotLinearizable(_))
    }

    /// `linearizable`, `NOT linearizable` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable(_) => "NOT linearizable",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// One key's check: the verdict and what it cost.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    pub verdict: Verdict,
    /// Configurations explored by the main search (not counting minimization).
    pub states: u64,
    /// Wall time, minimization included.
    pub elapsed: Duration,
}

/// An operation placed in the longest linearizable prefix, with the register after it.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Index in the history.
    pub index: usize,
    pub op: Operation,
    pub state_after: String,
}

/// An operation that could have been linearized next at the dead end, and why it was not.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: usize,
    pub op: Operation,
    pub reason: String,
}

/// An operation of the minimal witness.
#[derive(Debug, Clone)]
pub struct WitnessOp {
    pub index: usize,
    pub op: Operation,
    /// Its `ok` outcome was weakened to `unknown` (see [`Anomaly::witness`]).
    pub weakened: bool,
}

/// Why a key's sub-history is not linearizable, as Knossos and Porcupine report it: the
/// longest linearizable prefix the search reached, and the operations that could not be
/// placed after it. Plus a minimal witness, when minimization ran.
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// Length of the longest linearizable prefix found.
    pub linearized: usize,
    /// Its last few operations (up to [`PREFIX_SHOWN`]), oldest first.
    pub prefix_tail: Vec<Placed>,
    /// The register after that prefix.
    pub state: String,
    /// The operation whose completion came while it still could not be linearized.
    pub stuck: Candidate,
    /// Every operation that could have been linearized next (invoked, not yet placed), with
    /// the reason it did not fit; the stuck operation is among them.
    pub candidates: Vec<Candidate>,
    /// Candidates left out of `candidates` (at most [`CANDIDATES_SHOWN`] are kept).
    pub more_candidates: usize,
    /// A 1-minimal non-linearizable sub-history, each operation as recorded or weakened. It
    /// is derived from the history by steps that can only make a history *more* linearizable
    /// (dropping a read; turning an `ok` mutation into `unknown`), so it is a proof by itself:
    /// if the witness cannot be linearized, neither can the history. Undoing any one step
    /// (removing another read, weakening another operation) makes it linearizable, or could
    /// not be shown not to within the minimization budget. Unknown writes that no remaining
    /// operation can observe are not listed. Empty when minimization did not run.
    pub witness: Vec<WitnessOp>,
}

/// Operations of the prefix shown in an [`Anomaly`].
pub const PREFIX_SHOWN: usize = 8;
/// Candidates kept in an [`Anomaly`].
pub const CANDIDATES_SHOWN: usize = 16;

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cannot linearize #{} {}",
            self.stuck.index, self.stuck.op
        )?;
        write!(f, "  longest linearizable prefix: {} ops", self.linearized)?;
        if self.prefix_tail.len() < self.linearized {
            write!(f, ", the last {}", self.prefix_tail.len())?;
        }
        writeln!(f, " (op  ->  register after it):")?;
        for p in &self.prefix_tail {
            writeln!(f, "    #{} {}  ->  {}", p.index, p.op, p.state_after)?;
        }
        writeln!(f, "  register after the prefix: {}", self.state)?;
        writeln!(
            f,
            "  #{} completes before it can be placed; what could go next:",
            self.stuck.index
        )?;
        for c in &self.candidates {
            writeln!(f, "    #{} {}: {}", c.index, c.op, c.reason)?;
        }
        if self.more_candidates > 0 {
            writeln!(f, "    ... and {} more", self.more_candidates)?;
        }
        if !self.witness.is_empty() {
            writeln!(
                f,
                "  minimal witness ({} ops, not linearizable by themselves):",
                self.witness.len()
            )?;
            for w in &self.witness {
                let note = if w.weakened {
                    "  (weakened to unknown)"
                } else {
                    ""
                };
                writeln!(f, "    #{} {}{note}", w.index, w.op)?;
            }
        }
        Ok(())
    }
}

/// Checks one key's operations (`(index in the history, operation)`, any order, all of the
/// same key; their validity as checked by [`super::history::History::validate`] is assumed,
/// malformed operations give [`Verdict::Unknown`]).
///
/// `minimize`: on a violation, spend up to this long computing [`Anomaly::witness`].
pub fn check_ops(
    ops: &[(usize, &Operation)],
    budget: &Budget,
    minimize: Option<Duration>,
) -> KeyCheck {
    let start = Instant::now();
    let compiled = match compile(ops) {
        Ok(c) => c,
        Err(e) => {
            return KeyCheck {
                verdict: Verdict::Unknown(format!("malformed history: {e}")),
                states: 0,
                elapsed: start.elapsed(),
            };
        }
    };
    let (result, states) = search(&compiled, budget, start);
    let verdict = match result {
        SearchResult::Linearizable => Verdict::Linearizable,
        SearchResult::OutOfBudget(why) => Verdict::Unknown(why),
        SearchResult::Violation(stuck) => {
            let mut anomaly = compiled.anomaly(&stuck);
            if let Some(time) = minimize {
                anomaly.witness = witness(ops, budget, time);
            }
            Verdict::NotLinearizable(Box::new(anomaly))
        }
    };
    KeyCheck {
        verdict,
        states,
        elapsed: start.elapsed(),
    }
}

/// The register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Reg {
    Absent,
    Int(i64),
    /// Interned bytes that are not a canonical integer.
    Bytes(u32),
}

/// A compiled operation: what it requires of the register and what it leaves there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Read(Reg),
    Write(Reg),
    Delete(Option<bool>),
    Incr { delta: i64, result: Option<i64> },
}

fn apply(step: Step, s: Reg) -> Option<Reg> {
    match step {
        Step::Read(v) => (v == s).then_some(s),
        Step::Write(v) => Some(v),
        Step::Delete(None) => Some(Reg::Absent),
        Step::Delete(Some(existed)) => (existed == (s != Reg::Absent)).then_some(Reg::Absent),
        Step::Incr { delta, result } => {
            let cur = match s {
                Reg::Absent => 0,
                Reg::Int(n) => n,
                Reg::Bytes(_) => return None,
            };
            let new = cur.checked_add(delta)?;
            if result.is_some_and(|r| r != new) {
                return None;
            }
            Some(Reg::Int(new))
        }
    }
}

/// `Some(n)` when `v` is the decimal text of `n` exactly as INCR would write it (no sign but
/// `-`, no leading zero, no spaces): the strings Redis's and simplekv's `string2ll` accept.
pub(crate) fn canonical_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// Interned values of one key.
#[derive(Default)]
struct Values<'a> {
    ids: HashMap<&'a [u8], u32>,
    bytes: Vec<&'a [u8]>,
}

impl<'a> Values<'a> {
    fn reg(&mut self, v: &'a [u8]) -> Reg {
        if let Some(n) = canonical_int(v) {
            return Reg::Int(n);
        }
        let next = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        let bytes = &mut self.bytes;
        Reg::Bytes(*self.ids.entry(v).or_insert_with(|| {
            bytes.push(v);
            next
        }))
    }

    fn render(&self, r: Reg) -> String {
        match r {
            Reg::Absent => "nil".into(),
            Reg::Int(n) => n.to_string(),
            Reg::Bytes(id) => {
                value_token(self.bytes.get(id as usize).copied().unwrap_or(&b"?"[..]))
            }
        }
    }
}

struct KOp<'a> {
    index: usize,
    op: &'a Operation,
    step: Step,
    /// `ok`: must be linearized. `unknown`: may be.
    required: bool,
    /// A required operation's bit; an unknown operation's class (see `Pool`).
    bit: usize,
    /// A required read: the class (dense id) of the value it returned.
    read_class: Option<usize>,
    /// An unknown write or delete: the class of the value it leaves, if a read returned it.
    out_class: Option<usize>,
}

struct Compiled<'a> {
    ops: Vec<KOp<'a>>,
    values: Values<'a>,
    n_required: usize,
    read_classes: usize,
    /// Per unknown class: the read class of the non-integer value its writes leave, if it is
    /// such a write class (`Some(None)`: a value no read returned).
    class_bytes: Vec<Option<Option<usize>>>,
    /// Per read class: the unknown class writing that (non-integer) value, if any.
    class_of_read: Vec<Option<usize>>,
    /// Per interned value: its read class.
    value_read_class: Vec<Option<usize>>,
}

/// Turns a key's operations into steps. `fail` operations and unknown reads are left out,
/// and so are unknown operations that nothing could observe (see `Observers`).
fn compile<'a>(ops: &[(usize, &'a Operation)]) -> Result<Compiled<'a>, String> {
    let mut values = Values::default();
    let mut all = Vec::with_capacity(ops.len());
    for &(index, o) in ops {
        if o.complete < o.invoke {
            return Err(format!("#{index} completes before its invocation"));
        }
        let required = match o.outcome {
            Outcome::Ok(_) => true,
            Outcome::Unknown => false,
            Outcome::Fail => continue,
        };
        let step = match (&o.op, &o.outcome) {
            (Op::Read, Outcome::Ok(Ret::Value(v))) => {
                Step::Read(v.as_deref().map_or(Reg::Absent, |v| values.reg(v)))
            }
            (Op::Read, Outcome::Unknown) => continue,
            (Op::Write(v), Outcome::Ok(Ret::Done) | Outcome::Unknown) => Step::Write(values.reg(v)),
            (Op::Incr(d), Outcome::Ok(Ret::Int(r))) => Step::Incr {
                delta: *d,
                result: Some(*r),
            },
            (Op::Incr(d), Outcome::Unknown) => Step::Incr {
                delta: *d,
                result: None,
            },
            (Op::Delete, Outcome::Ok(Ret::Deleted(e))) => Step::Delete(Some(*e)),
            (Op::Delete, Outcome::Ok(Ret::Done) | Outcome::Unknown) => Step::Delete(None),
            (op, outcome) => return Err(format!("#{index}: {op:?} cannot end in {outcome:?}")),
        };
        all.push(KOp {
            index,
            op: o,
            step,
            required,
            bit: 0,
            read_class: None,
            out_class: None,
        });
    }
    let mut classes: HashMap<Reg, usize> = HashMap::new();
    for k in &mut all {
        if let (true, Step::Read(v)) = (k.required, k.step) {
            let next = classes.len();
            k.read_class = Some(*classes.entry(v).or_insert(next));
        }
    }
    for k in &mut all {
        k.out_class = match (k.required, k.step) {
            (false, Step::Write(v)) => classes.get(&v).copied(),
            (false, Step::Delete(_)) => classes.get(&Reg::Absent).copied(),
            _ => None,
        };
    }
    let observers = Observers::new(&all, classes.len());
    all.retain(|k| !observers.dead(k));
    // Unknown operations with the same step are interchangeable: one class each.
    let mut uclasses: HashMap<Step, usize> = HashMap::new();
    let mut class_bytes = Vec::new();
    let mut class_of_read = vec![None; classes.len()];
    let mut n_required = 0;
    for k in &mut all {
        if k.required {
            k.bit = n_required;
            n_required += 1;
            continue;
        }
        let next = uclasses.len();
        k.bit = *uclasses.entry(k.step).or_insert(next);
        if k.bit == next {
            class_bytes.push(match k.step {
                Step::Write(Reg::Bytes(_)) => Some(k.out_class),
                _ => None,
            });
            if let (Step::Write(Reg::Bytes(_)), Some(rc)) = (k.step, k.out_class) {
                class_of_read[rc] = Some(next);
            }
        }
    }
    let mut value_read_class = vec![None; values.bytes.len()];
    for (&v, &c) in &classes {
        if let Reg::Bytes(id) = v {
            value_read_class[id as usize] = Some(c);
        }
    }
    Ok(Compiled {
        ops: all,
        values,
        n_required,
        read_classes: classes.len(),
        class_bytes,
        class_of_read,
        value_read_class,
    })
}

/// The operations not yet linearized that could observe an unknown operation's effect, by
/// kind. An unknown operation `u` is *dead* once none is left: it is then never tried again
/// (and left out from the start if it has no observer at all).
///
/// The observers of `u` are the operations that could come directly after `u` (they accept
/// the state `u` leaves) and depend on that state: reads returning `u`'s value (any integer,
/// for an unknown incr); incrs, unless `u` left a non-integer (no incr can follow that);
/// DELs that replied 1 when `u` leaves a value, DELs that replied 0 when `u` deletes.
/// Unknown incrs count as observers until they are linearized.
///
/// Why skipping dead operations loses no linearization: take a linearization `L` and remove
/// every unknown `u` placed after all of its observers that `L` contains. In `L`, the
/// operation right after `u` accepts `u`'s state and is not an observer, so it is a write or
/// a DEL whose reply was not recorded, which leaves the same state whatever came before (or
/// there is none). So each removal leaves every other operation seeing the state it saw,
/// and the result is a linearization in which every unknown operation is placed while one
/// of its observers is still to come: the search, which tries every order of the remaining
/// operations, finds it.
#[derive(Debug, Clone)]
struct Observers {
    /// Required reads not yet linearized, per value class.
    reads: Vec<u32>,
    /// Required reads of integers not yet linearized.
    int_reads: u32,
    /// Incrs (required or unknown) not yet linearized.
    incrs: u32,
    /// DELs that replied 1 (the key existed), not yet linearized.
    present_deletes: u32,
    /// DELs that replied 0, not yet linearized.
    absent_deletes: u32,
}

impl Observers {
    /// Nothing linearized yet.
    fn new(ops: &[KOp], classes: usize) -> Observers {
        let mut o = Observers {
            reads: vec![0; classes],
            int_reads: 0,
            incrs: 0,
            present_deletes: 0,
            absent_deletes: 0,
        };
        for k in ops {
            o.count(k, true);
        }
        o
    }

    /// `k` rejoins (`add`) or leaves the operations not yet linearized. Returns the read
    /// class whose count went from 1 to 0 or from 0 to 1, if any.
    fn count(&mut self, k: &KOp, add: bool) -> Option<usize> {
        let f = |n: &mut u32| {
            if add {
                *n += 1;
            } else {
                *n -= 1;
            }
        };
        let mut edge = None;
        if let Some(c) = k.read_class {
            f(&mut self.reads[c]);
            if self.reads[c] == u32::from(add) {
                edge = Some(c);
            }
        }
        match k.step {
            Step::Read(Reg::Int(_)) if k.required => f(&mut self.int_reads),
            Step::Incr { .. } => f(&mut self.incrs),
            Step::Delete(Some(true)) => f(&mut self.present_deletes),
            Step::Delete(Some(false)) => f(&mut self.absent_deletes),
            _ => {}
        }
        edge
    }

    /// Whether `k` is an unknown operation nothing left can observe.
    fn dead(&self, k: &KOp) -> bool {
        if k.required {
            return false;
        }
        let reads = k.out_class.map_or(0, |c| self.reads[c]);
        match k.step {
            Step::Write(Reg::Bytes(_)) => reads == 0 && self.present_deletes == 0,
            Step::Write(_) => reads == 0 && self.present_deletes == 0 && self.incrs == 0,
            Step::Delete(_) => reads == 0 && self.absent_deletes == 0 && self.incrs == 0,
            // The incr itself is among `incrs`.
            Step::Incr { .. } => {
                self.int_reads == 0 && self.present_deletes == 0 && self.incrs == 1
            }
            Step::Read(_) => false,
        }
    }

    /// The register for memoization: a non-integer value no remaining read returns is
    /// indistinguishable from any other such value (`(3, 0)`).
    fn state_key(&self, c: &Compiled, s: Reg) -> [u64; 2] {
        match s {
            Reg::Absent => [0, 0],
            Reg::Int(n) => [1, n as u64],
            Reg::Bytes(id) => {
                let unread = c
                    .value_read_class
                    .get(id as usize)
                    .copied()
                    .flatten()
                    .is_none_or(|rc| self.reads[rc] == 0);
                if unread { [3, 0] } else { [2, u64::from(id)] }
            }
        }
    }
}

/// The unknown operations linearized so far, as counts per class. Unknown operations with
/// the same step form a class; the search uses a class's members in invocation order (the
/// first unused one only), so the count says which were used. Writes of non-integer values
/// that no remaining read returns are interchangeable across classes too (whatever they
/// leave, no remaining operation can tell it from another such value): their counts are
/// merged into `opaque` while that holds, and a pass of phase 2 tries one of them only.
///
/// Why configurations with the same required set, register and counts are equivalent: a
/// used unknown operation was eligible (invoked before the first pending completion) when
/// it was used, so it is eligible in any configuration with this required set; so both
/// configurations have the same number of eligible, unused, interchangeable operations of
/// each kind now, and the same ones becoming eligible later. With fewer used of every kind,
/// a configuration has every continuation of the other.
#[derive(Debug, Clone, Default)]
struct Pool {
    used: Vec<u32>,
    /// Classes in use that are not merged, with their counts, by class.
    distinct: std::collections::BTreeMap<u32, u32>,
    opaque: u32,
}

impl Pool {
    fn new(classes: usize) -> Pool {
        Pool {
            used: vec![0; classes],
            ..Pool::default()
        }
    }

    fn is_opaque(c: &Compiled, o: &Observers, class: usize) -> bool {
        c.class_bytes
            .get(class)
            .copied()
            .flatten()
            .is_some_and(|rc| rc.is_none_or(|rc| o.reads[rc] == 0))
    }

    /// Uses (`add`) or gives back one operation of `class`.
    fn take(&mut self, c: &Compiled, o: &Observers, class: usize, add: bool) {
        let n = &mut self.used[class];
        *n = if add { *n + 1 } else { *n - 1 };
        let n = *n;
        if Pool::is_opaque(c, o, class) {
            self.opaque = if add {
                self.opaque + 1
            } else {
                self.opaque - 1
            };
        } else if n == 0 {
            self.distinct.remove(&(class as u32));
        } else {
            self.distinct.insert(class as u32, n);
        }
    }

    /// The last read of read class `rc` was just linearized (`to_opaque`), or unlinearized.
    fn read_edge(&mut self, c: &Compiled, rc: usize, to_opaque: bool) {
        let Some(class) = c.class_of_read.get(rc).copied().flatten() else {
            return;
        };
        let n = self.used[class];
        if n == 0 {
            return;
        }
        if to_opaque {
            self.distinct.remove(&(class as u32));
            self.opaque += n;
        } else {
            self.opaque -= n;
            self.distinct.insert(class as u32, n);
        }
    }

    fn key(&self, out: &mut Vec<u32>) {
        out.clear();
        out.push(self.opaque);
        for (&class, &n) in &self.distinct {
            out.extend([class, n]);
        }
    }
}

/// Whether pool key `a` used no more of any class than `b` (so it has every continuation
/// `b` has).
fn pool_le(a: &[u32], b: &[u32]) -> bool {
    let (Some((oa, a)), Some((ob, b))) = (a.split_first(), b.split_first()) else {
        return a.len() <= b.len();
    };
    if oa > ob {
        return false;
    }
    let mut bs = b.chunks_exact(2).peekable();
    for pa in a.chunks_exact(2) {
        loop {
            match bs.peek() {
                Some(pb) if pb[0] < pa[0] => {
                    bs.next();
                }
                Some(pb) if pb[0] == pa[0] && pb[1] >= pa[1] => break,
                _ => return false,
            }
        }
    }
    true
}

/// Fx-style hasher: the memo keys are bitsets, hashed on every step.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    /// With murmur3's finalizer: the multiply-xor rounds leave the low bits (which pick the
    /// bucket) depending on the low input bits only, and bitsets often differ only high up.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The explored configurations, with subsumption: a configuration is (required operations
/// linearized, register, unknown operations used per class, see `Pool`); one that used
/// no more of any class but is otherwise equal has every continuation the other has (the
/// unknown operations it did not use stay available, and no more of them are dead), so once
/// it is explored the other need not be.
///
/// Entries are found by a Zobrist hash of the required bitset (maintained incrementally by
/// the search) mixed with the register, and compared exactly.
#[derive(Default)]
struct Memo {
    map: HashMap<u64, Vec<Slot>, BuildHasherDefault<FastHasher>>,
    /// Approximate bytes held.
    bytes: usize,
}

struct Slot {
    req: Box<[u64]>,
    state: [u64; 2],
    /// The minimal pool keys explored with this (required set, register).
    pools: Vec<Box<[u32]>>,
}

impl Memo {
    /// Adds a configuration; false if it (or one that subsumes it) was explored already.
    fn insert(&mut self, zobrist: u64, req: &[u64], state: [u64; 2], pool: &[u32]) -> bool {
        let h = zobrist ^ splitmix(state[0] ^ splitmix(state[1]));
        let slots = self.map.entry(h).or_default();
        match slots
            .iter_mut()
            .find(|s| s.state == state && *s.req == *req)
        {
            Some(slot) => {
                if slot.pools.iter().any(|a| pool_le(a, pool)) {
                    return false;
                }
                slot.pools.retain(|a| !pool_le(pool, a));
                slot.pools.push(pool.into());
                self.bytes += pool.len() * 4 + 16;
            }
            None => {
                slots.push(Slot {
                    req: req.into(),
                    state,
                    pools: vec![pool.into()],
                });
                self.bytes += req.len() * 8 + pool.len() * 4 + 96;
            }
        }
        true
    }
}

/// SplitMix64's output function: Zobrist keys, and mixing the register into the hash.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where the search got stuck: the deepest dead end.
struct Stuck {
    depth: usize,
    /// The last [`PREFIX_SHOWN`] placed operations (positions in `Compiled::ops`) with the
    /// register after each.
    tail: Vec<(usize, Reg)>,
    state: Reg,
    stuck: usize,
    /// Positions, and whether the operation is a dead unknown one.
    candidates: Vec<(usize, bool)>,
    more_candidates: usize,
}

enum SearchResult {
    Linearizable,
    Violation(Stuck),
    OutOfBudget(String),
}

const NIL: usize = usize::MAX;
/// Sentinel of the list of required invocations and completions.
const HEAD: usize = 0;
/// Sentinel of the list of unknown invocations (they have no completion).
const UHEAD: usize = 1;

/// The event lists, doubly linked through the same arrays. Event nodes are numbered from 2
/// in time order (invocations before completions at the same nanosecond: touching intervals
/// overlap), so node numbers compare like times.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Position in `Compiled::ops` of each node's operation.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call node: its completion node, or `NIL` (unknown: completes at infinity).
    ret: Vec<usize>,
    /// Per unknown class: its invocation nodes in order.
    members: Vec<Vec<usize>>,
}

impl Events {
    fn new(c: &Compiled) -> Events {
        let mut ev: Vec<(u64, bool, usize)> = Vec::with_capacity(c.ops.len() * 2);
        for (p, k) in c.ops.iter().enumerate() {
            ev.push((k.op.invoke, false, p));
            if k.required {
                ev.push((k.op.complete, true, p));
            }
        }
        ev.sort_unstable();
        let n = ev.len() + 2;
        let mut e = Events {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            op: vec![NIL; n],
            is_call: vec![false; n],
            ret: vec![NIL; n],
            members: vec![Vec::new(); c.class_bytes.len()],
        };
        let mut call_node = vec![NIL; c.ops.len()];
        let mut tails = [HEAD, UHEAD];
        for (i, &(_, is_ret, p)) in ev.iter().enumerate() {
            let node = i + 2;
            e.op[node] = p;
            e.is_call[node] = !is_ret;
            if is_ret {
                e.ret[call_node[p]] = node;
            } else {
                call_node[p] = node;
            }
            if !is_ret && !c.ops[p].required {
                e.members[c.ops[p].bit].push(node);
            }
            let tail = &mut tails[usize::from(!c.ops[p].required)];
            e.next[*tail] = node;
            e.prev[node] = *tail;
            *tail = node;
        }
        e
    }

    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        if x != NIL {
            self.prev[x] = p;
        }
    }

    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        if x != NIL {
            self.prev[x] = n;
        }
    }

    /// Takes a call and its completion out of the lists.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.ret[call] != NIL {
            self.unlink(self.ret[call]);
        }
    }

    /// Undoes [`Events::lift`] (lifts are undone in reverse order, as in dancing links).
    fn unlift(&mut self, call: usize) {
        if self.ret[call] != NIL {
            self.relink(self.ret[call]);
        }
        self.relink(call);
    }

    /// Whether node `n` comes before `limit` (`NIL`: the end).
    fn before(n: usize, limit: usize) -> bool {
        n != NIL && n < limit
    }
}

/// A linearized operation on the search stack.
struct Frame {
    call: usize,
    before: Reg,
    /// Phase 2, and its limit: the first pending completion.
    phase2: bool,
    limit: usize,
    /// A read placed as soon as it fit: no alternative to it is explored.
    forced: bool,
    /// Length of the stack of dead unknown invocations unlinked, when it was pushed.
    dead_mark: usize,
    /// In phase 2: an opaque write was tried already in this pass.
    opaque_done: bool,
}

/// What the search tracks besides the event lists and the register.
struct Tracked {
    /// Required operations linearized, and its Zobrist hash.
    req: Vec<u64>,
    zobrist: u64,
    observers: Observers,
    pool: Pool,
    pool_key: Vec<u32>,
}

impl Tracked {
    fn new(c: &Compiled) -> Tracked {
        Tracked {
            req: vec![0u64; c.n_required.div_ceil(64)],
            zobrist: 0,
            observers: Observers::new(&c.ops, c.read_classes),
            pool: Pool::new(c.class_bytes.len()),
            pool_key: Vec::new(),
        }
    }

    /// Marks `k` linearized (`add`) or not.
    fn take(&mut self, c: &Compiled, k: &KOp, add: bool) {
        if k.required {
            self.req[k.bit / 64] ^= 1 << (k.bit % 64);
            self.zobrist ^= splitmix(k.bit as u64);
        }
        // Linearizing: the pool class is counted under the observers before `k` leaves
        // them; unlinearizing: after it rejoins them (the same observers either way).
        if add && !k.required {
            self.pool.take(c, &self.observers, k.bit, true);
        }
        if let Some(rc) = self.observers.count(k, !add) {
            self.pool.read_edge(c, rc, add);
        }
        if !add && !k.required {
            self.pool.take(c, &self.observers, k.bit, false);
        }
    }

    /// Records the configuration with register `s`; false if explored already.
    fn visit(&mut self, c: &Compiled, memo: &mut Memo, s: Reg) -> bool {
        self.pool.key(&mut self.pool_key);
        let state = self.observers.state_key(c, s);
        memo.insert(self.zobrist, &self.req, state, &self.pool_key)
    }
}

/// The search. From each configuration it first tries the required operations invoked
/// before the earliest pending completion (phase 1), then the live unknown ones (phase 2),
/// so unknown operations are applied only where no required one fits.
///
/// A required read that fits the register is placed at once and nothing else is tried in
/// its stead: if a configuration has a successful continuation, it has one that starts with
/// that read (the read changes nothing; everything that must precede it in real time is
/// placed already, or its completion would come before the read's invocation in the list).
/// So when the configuration after the read fails, the one before it fails too.
fn search(c: &Compiled, budget: &Budget, start: Instant) -> (SearchResult, u64) {
    let mut ev = Events::new(c);
    let mut t = Tracked::new(c);
    let mut memo = Memo::default();
    let mut stack: Vec<Frame> = Vec::new();
    // Dead unknown invocations taken out of the list, most recent last.
    let mut dead: Vec<usize> = Vec::new();
    let mut state = Reg::Absent;
    let mut remaining = c.n_required;
    let mut entry = ev.next[HEAD];
    let mut phase2 = false;
    // In phase 2: the completion where phase 1 stopped (`NIL`: the end of the list).
    let mut limit = NIL;
    let mut opaque_done = false;
    let mut states = 0u64;
    let mut steps = 0u64;
    let mut best: Option<Stuck> = None;
    loop {
        if remaining == 0 {
            return (SearchResult::Linearizable, states);
        }
        steps += 1;
        if steps.is_multiple_of(1024) && start.elapsed() > budget.max_time {
            let why = format!(
                "time budget of {:?} spent after {states} configurations",
                budget.max_time
            );
            return (SearchResult::OutOfBudget(why), states);
        }
        let candidate = if phase2 {
            Events::before(entry, limit)
        } else {
            // `entry == NIL` cannot happen while an `ok` operation remains (its completion is
            // still in the list, after every call tried so far); it would end phase 1.
            entry != NIL && ev.is_call[entry]
        };
        if candidate {
            let p = ev.op[entry];
            let k = &c.ops[p];
            if phase2 {
                if t.observers.dead(k) {
                    // Dead from here on down: out of the list until backtracking above here.
                    ev.unlink(entry);
                    dead.push(entry);
                    entry = ev.next[entry];
                    continue;
                }
                // One operation per class: the first unused (they are used in order), and
                // one opaque write per pass.
                let class = k.bit;
                let first = ev.members[class].get(t.pool.used[class] as usize);
                let opaque = Pool::is_opaque(c, &t.observers, class);
                if first != Some(&entry) || (opaque && opaque_done) {
                    entry = ev.next[entry];
                    continue;
                }
                opaque_done |= opaque;
            }
            let Some(next) = apply(k.step, state) else {
                entry = ev.next[entry];
                continue;
            };
            let forced = k.required && matches!(k.step, Step::Read(_));
            t.take(c, k, true);
            if t.visit(c, &mut memo, next) {
                states += 1;
                if states > budget.max_states {
                    let why = format!("state budget of {} configurations spent", budget.max_states);
                    return (SearchResult::OutOfBudget(why), states);
                }
                if memo.bytes > budget.max_memory {
                    let why = format!(
                        "memory budget of {} MiB spent after {states} configurations",
                        budget.max_memory >> 20
                    );
                    return (SearchResult::OutOfBudget(why), states);
                }
                stack.push(Frame {
                    call: entry,
                    before: state,
                    phase2,
                    limit,
                    forced,
                    dead_mark: dead.len(),
                    opaque_done,
                });
                state = next;
                ev.lift(entry);
                if k.required {
                    remaining -= 1;
                }
                entry = ev.next[HEAD];
                phase2 = false;
                continue;
            }
            t.take(c, k, false);
            if !forced {
                entry = ev.next[entry];
                continue;
            }
            // The configuration after the read failed already: so does this one.
        } else if !phase2 {
            // The completion of an operation not yet linearized: now the unknown operations
            // invoked before it.
            phase2 = true;
            limit = entry;
            opaque_done = false;
            entry = ev.next[UHEAD];
            continue;
        } else if limit != NIL && best.as_ref().is_none_or(|b| stack.len() > b.depth) {
            best = Some(snapshot(c, &ev, &t.observers, &stack, state, limit));
        }
        // Dead end: backtrack to the last choice that was not forced.
        loop {
            let Some(frame) = stack.pop() else {
                let stuck = best.unwrap_or(Stuck {
                    depth: 0,
                    tail: Vec::new(),
                    state,
                    stuck: 0,
                    candidates: Vec::new(),
                    more_candidates: 0,
                });
                return (SearchResult::Violation(stuck), states);
            };
            let k = &c.ops[ev.op[frame.call]];
            state = frame.before;
            t.take(c, k, false);
            // Undo in reverse order: the dead unlinked below this frame, then its lift.
            for &n in dead[frame.dead_mark..].iter().rev() {
                ev.relink(n);
            }
            dead.truncate(frame.dead_mark);
            ev.unlift(frame.call);
            if k.required {
                remaining += 1;
            }
            if !frame.forced {
                entry = ev.next[frame.call];
                phase2 = frame.phase2;
                limit = frame.limit;
                opaque_done = frame.opaque_done;
                break;
            }
        }
    }
}

fn snapshot(
    c: &Compiled,
    ev: &Events,
    observers: &Observers,
    stack: &[Frame],
    state: Reg,
    ret_node: usize,
) -> Stuck {
    let from = stack.len().saturating_sub(PREFIX_SHOWN);
    let tail = (from..stack.len())
        .map(|i| {
            let after = stack.get(i + 1).map_or(state, |f| f.before);
            (ev.op[stack[i].call], after)
        })
        .collect();
    // What could go next: required invocations before the completion, then unknown ones.
    let mut nodes = Vec::new();
    for head in [HEAD, UHEAD] {
        let mut n = ev.next[head];
        while Events::before(n, ret_node) {
            if ev.is_call[n] {
                nodes.push(n);
            }
            n = ev.next[n];
        }
    }
    nodes.sort_unstable();
    let more = nodes.len().saturating_sub(CANDIDATES_SHOWN);
    let candidates = nodes
        .iter()
        .take(CANDIDATES_SHOWN)
        .map(|&n| (ev.op[n], observers.dead(&c.ops[ev.op[n]])))
        .collect();
    Stuck {
        depth: stack.len(),
        tail,
        state,
        stuck: ev.op[ret_node],
        candidates,
        more_candidates: more,
    }
}

impl Compiled<'_> {
    fn candidate(&self, p: usize, state: Reg, dead: bool) -> Candidate {
        let k = &self.ops[p];
        let reason = if dead {
            "outcome unknown, and nothing left could observe it".into()
        } else {
            self.why_not(k.step, state)
        };
        Candidate {
            index: k.index,
            op: k.op.clone(),
            reason,
        }
    }

    fn why_not(&self, step: Step, s: Reg) -> String {
        if apply(step, s).is_some() {
            return "fits here, but every way on from it fails later".into();
        }
        let r = |x| self.values.render(x);
        match step {
            Step::Read(v) => format!("reads {}, the register holds {}", r(v), r(s)),
            Step::Delete(Some(existed)) => format!(
                "DEL replied {}, the register holds {}",
                u8::from(existed),
                r(s)
            ),
            Step::Incr { delta, result } => match s {
                Reg::Bytes(_) => format!("INCR needs an integer, the register holds {}", r(s)),
                Reg::Absent | Reg::Int(_) => {
                    let cur = if let Reg::Int(n) = s { n } else { 0 };
                    match (cur.checked_add(delta), result) {
                        (Some(new), Some(got)) => format!(
                            "from {} INCRBY {delta} gives {new}, the reply was {got}",
                            r(s)
                        ),
                        _ => format!("{} + {delta} overflows", r(s)),
                    }
                }
            },
            Step::Write(_) | Step::Delete(None) => "cannot fail".into(),
        }
    }

    fn anomaly(&self, st: &Stuck) -> Anomaly {
        let prefix_tail = st
            .tail
            .iter()
            .map(|&(p, after)| Placed {
                index: self.ops[p].index,
                op: self.ops[p].op.clone(),
                state_after: self.values.render(after),
            })
            .collect();
        Anomaly {
            linearized: st.depth,
            prefix_tail,
            state: self.values.render(st.state),
            stuck: self.candidate(st.stuck, st.state, false),
            candidates: st
                .candidates
                .iter()
                .map(|&(p, dead)| self.candidate(p, st.state, dead))
                .collect(),
            more_candidates: st.more_candidates,
            witness: Vec::new(),
        }
    }
}

/// Configurations allowed to each trial of the minimization.
const WITNESS_TRIAL_STATES: u64 = 200_000;

/// Shrinks a non-linearizable sub-history to a 1-minimal witness (delta debugging over
/// chunks of `ok` operations: a read is dropped, a mutation weakened to `unknown`; a step is
/// kept when the result is still shown not linearizable within the trial budget).
fn witness(ops: &[(usize, &Operation)], budget: &Budget, time: Duration) -> Vec<WitnessOp> {
    let start = Instant::now();
    let base: Vec<(usize, &Operation)> = ops
        .iter()
        .filter(|(_, o)| match o.outcome {
            Outcome::Fail => false,
            Outcome::Unknown => o.op.is_mutation(),
            Outcome::Ok(_) => true,
        })
        .copied()
        .collect();
    let trial = |weak: &[bool]| -> Vec<(usize, Operation, bool)> {
        base.iter()
            .zip(weak)
            .filter_map(|(&(i, o), &w)| match (w, &o.op) {
                (false, _) => Some((i, o.clone(), false)),
                (true, Op::Read) => None,
                (true, _) => Some((
                    i,
                    Operation {
                        outcome: Outcome::Unknown,
                        ..o.clone()
                    },
                    true,
                )),
            })
            .collect()
    };
    let mut weak = vec![false; base.len()];
    // Still shown not linearizable with these operations weakened?
    let violates = |w: &[bool]| -> bool {
        let left = time.saturating_sub(start.elapsed());
        let t = trial(w);
        let refs: Vec<(usize, &Operation)> = t.iter().map(|(i, o, _)| (*i, o)).collect();
        let b = Budget {
            max_states: budget.max_states.min(WITNESS_TRIAL_STATES),
            max_time: left,
            max_memory: budget.max_memory,
        };
        !left.is_zero()
            && compile(&refs).is_ok_and(|c| {
                matches!(search(&c, &b, Instant::now()).0, SearchResult::Violation(_))
            })
    };
    // Reads first (dropping them shortens the witness), then mutations; again while either
    // phase made progress.
    let ok = |read: bool| -> Vec<usize> {
        (0..base.len())
            .filter(|&i| base[i].1.is_ok() && (base[i].1.op == Op::Read) == read)
            .collect()
    };
    let mut phases = [ok(true), ok(false)];
    loop {
        let mut progress = false;
        for cands in &mut phases {
            progress |= ddmin(cands, &mut weak, &violates);
        }
        if !progress || start.elapsed() >= time {
            break;
        }
    }
    let t = trial(&weak);
    let refs: Vec<(usize, &Operation)> = t.iter().map(|(i, o, _)| (*i, o)).collect();
    let kept: HashSet<usize> = compile(&refs)
        .map(|c| c.ops.iter().map(|k| k.index).collect())
        .unwrap_or_default();
    let mut out: Vec<WitnessOp> = t
        .into_iter()
        .filter(|(i, _, _)| kept.contains(i))
        .map(|(index, op, weakened)| WitnessOp {
            index,
            op,
            weakened,
        })
        .collect();
    out.sort_by_key(|w| (w.op.invoke, w.index));
    out
}

/// Delta debugging over `cands`: weakens chunks of them (halving the chunk size down to
/// one) while `violates` holds, removing weakened ones from `cands`. True if any was.
fn ddmin(
    cands: &mut Vec<usize>,
    weak: &mut Vec<bool>,
    violates: &impl Fn(&[bool]) -> bool,
) -> bool {
    let mut progress = false;
    let mut chunk = cands.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < cands.len() {
            let end = (i + chunk).min(cands.len());
            let mut w = weak.clone();
            for &c in &cands[i..end] {
                w[c] = true;
            }
            if violates(&w) {
                *weak = w;
                cands.drain(i..end);
                progress = true;
            } else {
                i = end;
            }
        }
        if chunk == 1 {
            return progress;
        }
        chunk = chunk.div_ceil(2);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checker::history::{Key, Value};

    /// Test vocabulary: ops on key `k`, times in ns, values as strings.
    pub fn v(s: &str) -> Value {
        s.as_bytes().to_vec()
    }
    pub fn key() -> Key {
        v("k")
    }
    pub fn w(c: u64, val: &str, inv: u64, comp: u64) -> Operation {
        Operation::new(
            c,
            key(),
            Op::Write(v(val)),
            inv,
            comp,
            Outcome::Ok(Ret::Done),
        )
    }
    pub fn w_unknown(c: u64, val: &str, inv: u64, gave_up: u64) -> Operation {
        Operation::new(c, key(), Op::Write(v(val)), inv, gave_up, Outcome::Unknown)
    }
    pub fn w_fail(c: u64, val: &str, inv: u64, comp: u64) -> Operation {
        Operation::new(c, key(), Op::Write(v(val)), inv, comp, Outcome::Fail)
    }
    pub fn r(c: u64, val: Option<&str>, inv: u64, comp: u64) -> Operation {
        let ret = Ret::Value(val.map(v));
        Operation::new(c, key(), Op::Read, inv, comp, Outcome::Ok(ret))
    }
    pub fn incr(c: u64, delta: i64, result: i64, inv: u64, comp: u64) -> Operation {
        let out = Outcome::Ok(Ret::Int(result));
        Operation::new(c, key(), Op::Incr(delta), inv, comp, out)
    }
    pub fn del(c: u64, inv: u64, comp: u64, ret: Ret) -> Operation {
        Operation::new(c, key(), Op::Delete, inv, comp, Outcome::Ok(ret))
    }

    pub fn check(ops: &[Operation]) -> KeyCheck {
        let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
        check_ops(&refs, &Budget::UNLIMITED, Some(Duration::from_secs(5)))
    }

    #[track_caller]
    pub fn assert_linearizable(ops: &[Operation]) {
        let c = check(ops);
        match &c.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(a) => panic!("expected linearizable:\n{a}"),
            Verdict::Unknown(why) => panic!("expected linearizable, got unknown: {why}"),
        }
    }

    #[track_caller]
    pub fn assert_violation(ops: &[Operation]) -> Anomaly {
        match check(ops).verdict {
            Verdict::NotLinearizable(a) => *a,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    fn witness_indices(a: &Anomaly) -> Vec<usize> {
        let mut ix: Vec<usize> = a.witness.iter().map(|w| w.index).collect();
        ix.sort_unstable();
        ix
    }

    #[test]
    fn empty_and_trivial_histories_are_linearizable() {
        assert_linearizable(&[]);
        assert_linearizable(&[r(1, None, 0, 1)]);
        assert_linearizable(&[w(1, "a", 0, 1), r(1, Some("a"), 2, 3)]);
    }

    #[test]
    fn stale_read_is_caught() {
        // a, then b (acknowledged), then a read that still sees a.
        let ops = [
            w(1, "a", 0, 10),
            w(1, "b", 20, 30),
            r(2, Some("b"), 35, 40),
            r(2, Some("a"), 50, 60),
            r(3, Some("b"), 45, 70),
        ];
        let a = assert_violation(&ops);
        assert_eq!(a.stuck.index, 3, "{a}");
        assert!(
            a.stuck.reason.contains("reads =a, the register holds =b"),
            "{a}"
        );
        assert_eq!(witness_indices(&a), vec![0, 1, 3], "{a}");
        let text = a.to_string();
        assert!(
            text.contains("cannot linearize #3 c2 [50..60] k read ok =a"),
            "{text}"
        );
    }

    #[test]
    fn lost_write_is_caught() {
        // b is acknowledged, yet a later read sees the value before it.
        let ops = [
            w(1, "a", 0, 10),
            r(2, Some("a"), 11, 12),
            w(1, "b", 20, 30),
            r(2, Some("a"), 40, 50),
        ];
        let a = assert_violation(&ops);
        assert_eq!(a.stuck.index, 3, "{a}");
        assert_eq!(witness_indices(&a), vec![0, 2, 3], "{a}");
    }

    #[test]
    fn value_never_written_is_caught() {
        let ops = [w(1, "a", 0, 10), r(2, Some("zz"), 5, 20)];
        let a = assert_violation(&ops);
        assert!(a.stuck.reason.contains("reads =zz"), "{a}");
        assert_eq!(witness_indices(&a), vec![1], "{a}");
        // Nor may a read see a value only a failed write tried.
        assert_violation(&[w_fail(1, "x", 0, 10), r(2, Some("x"), 5, 20)]);
    }

    #[test]
    fn non_monotonic_incr_is_caught() {
        let ops = [
            incr(1, 1, 1, 0, 10),
            incr(2, 1, 2, 11, 20),
            incr(1, 1, 2, 21, 30),
        ];
        let a = assert_violation(&ops);
        assert!(a.stuck.reason.contains("gives 3, the reply was 2"), "{a}");
        // Concurrent increments may complete in either order.
        assert_linearizable(&[
            incr(1, 1, 2, 0, 10),
            incr(2, 1, 1, 0, 10),
            incr(3, 5, 7, 5, 20),
            r(4, Some("7"), 21, 22),
        ]);
        // Two increments cannot both return the same value.
        assert_violation(&[incr(1, 1, 1, 0, 10), incr(2, 1, 1, 0, 10)]);
    }

    #[test]
    fn incr_follows_integer_semantics() {
        // A written integer is INCRed; a read sees the text INCR left.
        assert_linearizable(&[
            w(1, "41", 0, 1),
            incr(1, 1, 42, 2, 3),
            r(1, Some("42"), 4, 5),
        ]);
        // Non-canonical integers are not integers to INCR.
        assert_violation(&[w(1, "041", 0, 1), incr(1, 1, 42, 2, 3)]);
        assert_violation(&[w(1, "x", 0, 1), incr(1, 1, 1, 2, 3)]);
        // Absent counts as 0; DEL resets.
        assert_linearizable(&[
            incr(1, 5, 5, 0, 1),
            del(1, 2, 3, Ret::Deleted(true)),
            incr(1, -2, -2, 4, 5),
        ]);
        // Overflow is an error, never an ok reply.
        assert_violation(&[
            w(1, &i64::MAX.to_string(), 0, 1),
            incr(1, 1, i64::MIN, 2, 3),
        ]);
    }

    #[test]
    fn delete_counts_are_checked() {
        assert_linearizable(&[
            del(1, 0, 1, Ret::Deleted(false)),
            w(1, "a", 2, 3),
            del(1, 4, 5, Ret::Deleted(true)),
            r(1, None, 6, 7),
        ]);
        let a = assert_violation(&[del(1, 0, 1, Ret::Deleted(true))]);
        assert!(
            a.stuck
                .reason
                .contains("DEL replied 1, the register holds nil"),
            "{a}"
        );
        assert_violation(&[w(1, "a", 0, 1), del(1, 2, 3, Ret::Deleted(false))]);
        assert_violation(&[
            w(1, "a", 0, 1),
            del(1, 2, 3, Ret::Done),
            r(1, Some("a"), 4, 5),
        ]);
    }

    #[test]
    fn overlapping_writes_may_be_read_in_either_order() {
        for (first, second) in [("a", "b"), ("b", "a")] {
            assert_linearizable(&[
                w(1, "a", 0, 100),
                w(2, "b", 10, 90),
                r(3, Some(first), 101, 110),
                r(3, Some(first), 111, 120),
            ]);
            // But once the later one is seen, the earlier cannot come back.
            assert_violation(&[
                w(1, "a", 0, 100),
                w(2, "b", 10, 90),
                r(3, Some(second), 101, 110),
                r(3, Some(first), 111, 120),
            ]);
        }
    }

    #[test]
    fn read_concurrent_with_a_write_sees_either_value() {
        for seen in [Some("a"), Some("b")] {
            assert_linearizable(&[w(1, "a", 0, 10), w(1, "b", 20, 40), r(2, seen, 25, 35)]);
        }
        // Two concurrent reads may even see both, in either order, if they overlap each other.
        assert_linearizable(&[
            w(1, "a", 0, 10),
            w(1, "b", 20, 40),
            r(2, Some("b"), 15, 30),
            r(3, Some("a"), 15, 30),
        ]);
        // Touching intervals (same ns) count as concurrent.
        assert_linearizable(&[w(1, "a", 0, 10), r(2, None, 10, 20)]);
        assert_violation(&[w(1, "a", 0, 10), r(2, None, 11, 20)]);
    }

    #[test]
    fn reads_of_nil_before_any_write() {
        assert_linearizable(&[
            r(1, None, 0, 5),
            r(2, None, 6, 10),
            w(3, "a", 8, 20),
            r(1, None, 9, 12),
            r(1, Some("a"), 21, 22),
        ]);
        assert_violation(&[w(3, "a", 0, 5), r(1, None, 9, 12)]);
    }

    #[test]
    fn unknown_writes_may_or_may_not_apply() {
        // Not applied: later reads keep seeing the old value.
        assert_linearizable(&[
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20, 30),
            r(3, Some("a"), 40, 50),
            r(3, Some("a"), 60, 70),
        ]);
        // Applied, even long after the client gave up.
        assert_linearizable(&[
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20, 30),
            r(3, Some("a"), 40, 50),
            r(3, Some("b"), 1000, 1010),
        ]);
        // But not before it was invoked, and at most once.
        assert_violation(&[w_unknown(2, "b", 20, 30), r(3, Some("b"), 0, 10)]);
        assert_violation(&[
            w_unknown(2, "b", 20, 30),
            r(3, Some("b"), 40, 50),
            w(1, "a", 60, 70),
            r(3, Some("b"), 80, 90),
        ]);
        // Unknown increments: applied or not, with any reply.
        let unk = Operation::new(2, key(), Op::Incr(10), 5, 6, Outcome::Unknown);
        assert_linearizable(&[incr(1, 1, 1, 0, 1), unk.clone(), incr(1, 1, 12, 20, 21)]);
        assert_linearizable(&[incr(1, 1, 1, 0, 1), unk.clone(), incr(1, 1, 2, 20, 21)]);
        assert_violation(&[incr(1, 1, 1, 0, 1), unk, incr(1, 1, 5, 20, 21)]);
        // Failed operations never apply.
        assert_linearizable(&[
            w(1, "a", 0, 10),
            w_fail(2, "b", 20, 30),
            r(3, Some("a"), 40, 50),
        ]);
    }

    #[test]
    fn unknown_writes_that_might_be_observed_are_kept() {
        // The integer written by an unknown SET explains an INCR result.
        assert_linearizable(&[
            incr(1, 1, 1, 0, 1),
            Operation::new(2, key(), Op::Write(v("10")), 2, 3, Outcome::Unknown),
            incr(1, 1, 11, 4, 5),
        ]);
        // An unknown SET explains a DEL that found the key.
        assert_linearizable(&[
            Operation::new(2, key(), Op::Write(v("x")), 0, 1, Outcome::Unknown),
            del(1, 4, 5, Ret::Deleted(true)),
        ]);
    }

    #[test]
    fn anomaly_report_is_readable() {
        let mut ops = Vec::new();
        for i in 0..12u64 {
            ops.push(w(1, &format!("v{i}"), i * 10, i * 10 + 5));
            ops.push(r(2, Some(&format!("v{i}")), i * 10 + 6, i * 10 + 8));
        }
        ops.push(r(3, Some("v3"), 200, 210));
        let a = assert_violation(&ops);
        assert_eq!(a.linearized, 24);
        assert_eq!(a.prefix_tail.len(), PREFIX_SHOWN);
        assert_eq!(a.state, "=v11");
        assert_eq!(a.stuck.index, 24);
        let text = a.to_string();
        for needle in [
            "cannot linearize #24 c3 [200..210] k read ok =v3",
            "longest linearizable prefix: 24 ops, the last 8",
            "#23 c2 [116..118] k read ok =v11  ->  =v11",
            "register after the prefix: =v11",
            "reads =v3, the register holds =v11",
            "minimal witness (3 ops",
            "#6 c1 [30..35] k write =v3 ok",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        // The witness: v3's write, some later acknowledged write, and the stale read.
        let ix = witness_indices(&a);
        assert_eq!(ix.len(), 3, "{text}");
        assert_eq!((ix[0], ix[2]), (6, 24), "{text}");
    }

    /// `n` acknowledged writes all concurrent, then two sequential reads of different values
    /// written by two of them: not linearizable, but WGL only finds out after trying every
    /// subset and order of the writes (about n·2^(n-1) configurations).
    pub fn pathological(n: u64) -> Vec<Operation> {
        let mut ops: Vec<Operation> = (0..n).map(|i| w(i, &format!("v{i}"), i, 1000)).collect();
        ops.push(r(100, Some("v0"), 2000, 2001));
        ops.push(r(100, Some("v1"), 2002, 2003));
        ops
    }

    #[test]
    fn budget_turns_a_pathological_search_into_unknown() {
        let ops = pathological(40);
        let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
        let budget = Budget {
            max_states: 50_000,
            ..Budget::default()
        };
        let c = check_ops(&refs, &budget, Some(Duration::from_secs(1)));
        assert!(
            matches!(&c.verdict, Verdict::Unknown(w) if w.contains("state budget")),
            "{c:?}"
        );
        assert_eq!(c.states, 50_001);
        let budget = Budget {
            max_time: Duration::from_millis(200),
            ..Budget::UNLIMITED
        };
        let c = check_ops(&refs, &budget, None);
        assert!(
            matches!(&c.verdict, Verdict::Unknown(w) if w.contains("time budget")),
            "{c:?}"
        );
        assert!(c.elapsed < Duration::from_secs(2), "{c:?}");
        let budget = Budget {
            max_memory: 4 << 20,
            ..Budget::UNLIMITED
        };
        let c = check_ops(&refs, &budget, None);
        assert!(
            matches!(&c.verdict, Verdict::Unknown(w) if w.contains("memory budget")),
            "{c:?}"
        );
        // Small enough, the same shape is decided.
        assert!(check(&pathological(6)).verdict.is_violation());
    }

    #[test]
    fn malformed_operations_give_unknown() {
        let bad = Operation::new(1, key(), Op::Read, 5, 1, Outcome::Ok(Ret::Value(None)));
        assert!(matches!(check(&[bad]).verdict, Verdict::Unknown(_)));
        let bad = Operation::new(1, key(), Op::Read, 0, 1, Outcome::Ok(Ret::Int(1)));
        assert!(matches!(check(&[bad]).verdict, Verdict::Unknown(_)));
    }

    #[test]
    fn canonical_integers_match_string2ll() {
        for (s, n) in [("0", Some(0)), ("-1", Some(-1)), ("42", Some(42))] {
            assert_eq!(canonical_int(s.as_bytes()), n, "{s}");
        }
        assert_eq!(
            canonical_int(i64::MIN.to_string().as_bytes()),
            Some(i64::MIN)
        );
        for s in [
            "",
            "-0",
            "+1",
            "01",
            " 1",
            "1 ",
            "9223372036854775808",
            "1e3",
            "x",
        ] {
            assert_eq!(canonical_int(s.as_bytes()), None, "{s:?}");
        }
    }
}
