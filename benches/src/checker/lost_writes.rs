//! Lost-write detection from the final reads, separately from linearizability: a short,
//! direct answer to "did the store forget an acknowledged write?", cheap enough for any
//! history size (linear per key), and still meaningful when the linearizability search ran
//! out of budget.
//!
//! Definitions, per key:
//!
//! - A **mutation** is a write, incr or delete whose outcome is `ok` or `unknown` (`fail`
//!   ones never applied). It is **acknowledged** when `ok`.
//! - A **final read** is an `ok` read invoked strictly after every mutation of the key
//!   completed (for an `unknown` one: after the client gave up on it). The workload takes them
//!   after healing all faults; if a key has none it is not checked.
//! - A **producer** of a final read's value `F` is a mutation that can leave `F` in the
//!   register: a write of `F`; a delete when `F` is nil; an `ok` incr whose reply is `F`; an
//!   `unknown` incr when `F` is an integer (its reply is unknown). The initial empty register
//!   is a producer of nil that precedes everything.
//! - An acknowledged mutation `a` is **lost** when some final read's value has producers and
//!   *every* producer `x` precedes `a` in real time (`x` is `ok` and completed strictly
//!   before `a` was invoked).
//! - A final read is **phantom** when its value has no producer at all (never written).
//! - Final reads of a key are **divergent** when they return different values.
//!
//! Soundness (no false alarms on a linearizable history): take a linearization, and a final
//! read `f` returning `F`. Every acknowledged mutation `a` completed before `f` was invoked, so
//! `a` is linearized before `f`. Let `x` be the last mutation linearized before `f` (or the
//! initial state if there is none): `x` produced `F`, and `a` is `x` or comes before it, so
//! `x` cannot precede `a` in real time. Hence some producer of `F` does not precede `a`, and
//! `a` is not lost; and `F` has a producer, so `f` is not phantom; and all final reads return
//! the state after the last mutation, so they agree. Nothing here assumes written values are
//! unique; with unique values, "lost" reads: the final value was written strictly before `a`
//! was invoked, and never again.

use std::fmt;

use super::history::{History, Key, Op, Operation, Outcome, Ret, read_token};
use super::linearizable::canonical_int;

/// An acknowledged mutation missing from the final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    /// Index of the lost mutation in the history.
    pub index: usize,
    /// Index of a final read showing it lost.
    pub final_read: usize,
}

/// The lost-write check of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLostWrites {
    pub key: Key,
    /// Indices of the final reads (empty: the key was not checked).
    pub final_reads: Vec<usize>,
    /// Acknowledged mutations of the key.
    pub acknowledged: usize,
    /// Lost acknowledged mutations, in history order.
    pub lost: Vec<LostWrite>,
    /// Final reads whose value no operation produced.
    pub phantom: Vec<usize>,
    /// The final reads returned different values.
    pub divergent: bool,
}

impl KeyLostWrites {
    /// Whether the key had a final read to check against.
    pub fn checked(&self) -> bool {
        !self.final_reads.is_empty()
    }

    /// No lost write, no phantom value, no divergence.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.phantom.is_empty() && !self.divergent
    }
}

/// Checks every key of `history`, keys in byte order.
pub fn check(history: &History) -> Vec<KeyLostWrites> {
    history
        .by_key()
        .into_values()
        .map(|ix| {
            let ops: Vec<(usize, &Operation)> = ix.iter().map(|&i| (i, &history.ops[i])).collect();
            check_ops(&ops)
        })
        .collect()
}

/// Checks one key's operations (`(index in the history, operation)`, all of the same key).
pub fn check_ops(ops: &[(usize, &Operation)]) -> KeyLostWrites {
    let key = ops.first().map(|(_, o)| o.key.clone()).unwrap_or_default();
    let mutations: Vec<(usize, &Operation)> = ops
        .iter()
        .filter(|(_, o)| o.op.is_mutation() && o.outcome != Outcome::Fail)
        .copied()
        .collect();
    let horizon = mutations.iter().map(|(_, o)| o.complete).max();
    let finals: Vec<(usize, Option<&[u8]>)> = ops
        .iter()
        .filter_map(|&(i, o)| match (&o.op, &o.outcome) {
            (Op::Read, Outcome::Ok(Ret::Value(v))) if horizon.is_none_or(|h| o.invoke > h) => {
                Some((i, v.as_deref()))
            }
            _ => None,
        })
        .collect();
    let mut out = KeyLostWrites {
        key,
        final_reads: finals.iter().map(|&(i, _)| i).collect(),
        acknowledged: mutations.iter().filter(|(_, o)| o.is_ok()).count(),
        ..KeyLostWrites::default()
    };
    out.divergent = finals.windows(2).any(|w| w[0].1 != w[1].1);
    let mut lost: Vec<LostWrite> = Vec::new();
    for &(fi, value) in &finals {
        // The latest real-time completion among the producers of `value`: None when one of
        // them never completed (it precedes nothing), Some(None) for "before everything"
        // (only the initial state produces it).
        let mut any = value.is_none();
        let mut latest: Option<Option<u64>> = Some(None);
        for (_, x) in &mutations {
            if !produces(x, value) {
                continue;
            }
            any = true;
            latest = match (latest, x.definite_completion()) {
                (Some(t), Some(c)) => Some(t.max(Some(c))),
                _ => None,
            };
        }
        if !any {
            out.phantom.push(fi);
            continue;
        }
        let Some(latest) = latest else { continue };
        for &(ai, a) in &mutations {
            let before_a = latest.is_none_or(|t| t < a.invoke);
            if a.is_ok() && before_a && !lost.iter().any(|l| l.index == ai) {
                lost.push(LostWrite {
                    index: ai,
                    final_read: fi,
                });
            }
        }
    }
    lost.sort_by_key(|l| l.index);
    out.lost = lost;
    out
}

/// Whether mutation `x` can leave `value` in the register.
fn produces(x: &Operation, value: Option<&[u8]>) -> bool {
    match (&x.op, value) {
        (Op::Write(v), Some(f)) => v.as_slice() == f,
        (Op::Delete, None) => true,
        (Op::Incr(_), Some(f)) => match &x.outcome {
            Outcome::Ok(Ret::Int(r)) => canonical_int(f) == Some(*r),
            Outcome::Unknown => canonical_int(f).is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// Writes the findings of one key, one line each, indented, using `history` to show the
/// operations: nothing when the key is clean.
pub struct Findings<'a> {
    pub key: &'a KeyLostWrites,
    pub history: &'a History,
}

impl fmt::Display for Findings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = |i: usize| self.history.ops.get(i);
        let seen = |i: usize| match op(i).map(|o| &o.outcome) {
            Some(Outcome::Ok(Ret::Value(v))) => read_token(v.as_deref()),
            _ => "?".into(),
        };
        for l in &self.key.lost {
            if let Some(o) = op(l.index) {
                writeln!(
                    f,
                    "  LOST #{} {} (final read #{} saw {})",
                    l.index,
                    o,
                    l.final_read,
                    seen(l.final_read)
                )?;
            }
        }
        for &p in &self.key.phantom {
            if let Some(o) = op(p) {
                writeln!(f, "  PHANTOM final read #{p} {o}: nothing wrote that value")?;
            }
        }
        if self.key.divergent {
            let values: Vec<String> = self.key.final_reads.iter().map(|&i| seen(i)).collect();
            writeln!(f, "  DIVERGENT final reads: {}", values.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::linearizable::tests::{del, incr, key, r, w, w_fail, w_unknown};

    fn run(ops: &[Operation]) -> KeyLostWrites {
        let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
        check_ops(&refs)
    }

    fn lost(ops: &[Operation]) -> Vec<usize> {
        let k = run(ops);
        assert!(k.checked(), "no final read in {ops:?}");
        k.lost.iter().map(|l| l.index).collect()
    }

    #[test]
    fn acked_write_never_visible_is_lost() {
        // b acknowledged, but the final read (after everything) sees a.
        let ops = [
            w(1, "a", 0, 10),
            w(2, "b", 20, 30),
            r(3, Some("a"), 100, 110),
        ];
        assert_eq!(lost(&ops), vec![1]);
        let k = run(&ops);
        assert_eq!(k.lost[0].final_read, 2);
        assert_eq!(k.acknowledged, 2);
        // Never written at all: nil at the end.
        assert_eq!(lost(&[w(1, "a", 0, 10), r(3, None, 100, 110)]), vec![0]);
        // An acknowledged DEL lost: the key came back.
        let ops = [
            w(1, "a", 0, 10),
            del(1, 20, 30, Ret::Done),
            r(3, Some("a"), 100, 110),
        ];
        assert_eq!(lost(&ops), vec![1]);
        // Every acknowledged mutation after the producer is lost, incrs included.
        let ops = [
            w(1, "a", 0, 10),
            w(2, "b", 20, 30),
            incr(2, 1, 1, 40, 50),
            r(3, Some("a"), 100, 110),
        ];
        assert_eq!(lost(&ops), vec![1, 2]);
    }

    #[test]
    fn overwritten_or_concurrent_writes_are_not_lost() {
        // Overwritten by a later write: fine.
        assert!(
            lost(&[
                w(1, "a", 0, 10),
                w(2, "b", 20, 30),
                r(3, Some("b"), 100, 110)
            ])
            .is_empty()
        );
        // Concurrent writes: either may win.
        for seen in ["a", "b"] {
            let ops = [
                w(1, "a", 0, 30),
                w(2, "b", 10, 20),
                r(3, Some(seen), 100, 110),
            ];
            assert!(lost(&ops).is_empty(), "{seen}");
        }
        // Touching intervals are concurrent.
        assert!(
            lost(&[
                w(1, "a", 0, 10),
                w(2, "b", 10, 20),
                r(3, Some("a"), 100, 110)
            ])
            .is_empty()
        );
        // Deleted at the end: nil is produced by the delete.
        assert!(
            lost(&[
                w(1, "a", 0, 10),
                del(2, 20, 30, Ret::Done),
                r(3, None, 100, 110)
            ])
            .is_empty()
        );
        // Nothing acknowledged, nothing lost.
        assert!(lost(&[r(3, None, 100, 110)]).is_empty());
    }

    #[test]
    fn unknown_mutations_may_have_applied_or_not() {
        // The unknown write may have won...
        let ops = [
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20, 30),
            r(3, Some("b"), 100, 110),
        ];
        assert!(run(&ops).is_clean());
        // ...or not.
        let ops = [
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20, 30),
            r(3, Some("a"), 100, 110),
        ];
        assert!(run(&ops).is_clean());
        // An unknown write invoked before the acked one and never completing may still have
        // applied after it.
        let ops = [
            w_unknown(2, "b", 0, 30),
            w(1, "a", 40, 50),
            r(3, Some("b"), 100, 110),
        ];
        assert!(run(&ops).is_clean());
        // An unknown delete explains nil.
        let unk_del = Operation::new(2, key(), Op::Delete, 20, 30, Outcome::Unknown);
        assert!(run(&[w(1, "a", 0, 10), unk_del, r(3, None, 100, 110)]).is_clean());
        // An unknown incr may produce any integer.
        let unk_incr = Operation::new(2, key(), Op::Incr(5), 20, 30, Outcome::Unknown);
        assert!(run(&[w(1, "a", 0, 10), unk_incr, r(3, Some("7"), 100, 110)]).is_clean());
        // Failed mutations never produce anything: the final b is phantom.
        let ops = [
            w(1, "a", 0, 10),
            w_fail(2, "b", 20, 30),
            r(3, Some("b"), 100, 110),
        ];
        let k = run(&ops);
        assert_eq!(k.phantom, vec![2]);
    }

    #[test]
    fn final_reads_are_after_every_mutation() {
        // The read at 25 overlaps b: not final. The key has no final read: not checked.
        let ops = [w(1, "a", 0, 10), w(2, "b", 20, 30), r(3, Some("a"), 25, 28)];
        assert!(!run(&ops).checked());
        // An unknown mutation's give-up time counts too.
        let ops = [
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20, 300),
            r(3, Some("a"), 100, 110),
        ];
        assert!(!run(&ops).checked());
        // A failed mutation does not.
        let ops = [
            w(1, "a", 0, 10),
            w_fail(2, "b", 20, 300),
            r(3, Some("a"), 100, 110),
        ];
        assert_eq!(run(&ops).final_reads, vec![2]);
    }

    #[test]
    fn phantom_and_divergent_final_reads() {
        let k = run(&[w(1, "a", 0, 10), r(3, Some("zz"), 100, 110)]);
        assert_eq!(k.phantom, vec![1]);
        assert!(
            k.lost.is_empty(),
            "no producer: nothing can be pinned as lost"
        );
        assert!(!k.is_clean());
        let k = run(&[
            w(1, "a", 0, 30),
            w(2, "b", 10, 20),
            r(3, Some("a"), 100, 110),
            r(4, Some("b"), 100, 110),
        ]);
        assert!(k.divergent && k.lost.is_empty() && k.phantom.is_empty());
        assert!(!k.is_clean());
    }

    #[test]
    fn repeated_values_are_handled_without_uniqueness() {
        // a is written twice; the second time after b, so seeing a loses nothing.
        let ops = [
            w(1, "a", 0, 10),
            w(2, "b", 20, 30),
            w(1, "a", 40, 50),
            r(3, Some("a"), 100, 110),
        ];
        assert!(lost(&ops).is_empty());
        // Both writes of a precede c: c is lost.
        let ops = [
            w(1, "a", 0, 10),
            w(1, "a", 12, 15),
            w(2, "c", 20, 30),
            r(3, Some("a"), 100, 110),
        ];
        assert_eq!(lost(&ops), vec![2]);
        // INCR results that repeat after a DEL.
        let ops = [
            incr(1, 1, 1, 0, 10),
            del(1, 20, 30, Ret::Done),
            incr(1, 1, 1, 40, 50),
            r(3, Some("1"), 100, 110),
        ];
        assert!(lost(&ops).is_empty());
    }

    #[test]
    fn findings_are_printed() {
        let mut h = History::new();
        for o in [
            w(1, "a", 0, 10),
            w(2, "b", 20, 30),
            r(3, Some("a"), 100, 110),
        ] {
            h.push(o);
        }
        let keys = check(&h);
        assert_eq!(keys.len(), 1);
        let text = Findings {
            key: &keys[0],
            history: &h,
        }
        .to_string();
        assert_eq!(
            text,
            "  LOST #1 c2 [20..30] k write =b ok (final read #2 saw =a)\n"
        );
    }
}
