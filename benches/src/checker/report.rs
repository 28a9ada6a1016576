//! Checks a whole history (linearizability per key, lost writes per key) and prints the
//! result.

use std::fmt;
use std::time::{Duration, Instant};

use super::history::{History, HistoryError, Key, Operation, Outcome, key_token};
use super::linearizable::{self, Budget, KeyCheck, Verdict};
use super::lost_writes::{self, Findings, KeyLostWrites};

/// What [`check`] may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The linearizability search budget, per key.
    pub budget: Budget,
    /// Time per non-linearizable key for computing a minimal witness; `None`: skip it.
    pub minimize: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            budget: Budget::default(),
            minimize: Some(Duration::from_secs(10)),
        }
    }
}

/// Operations by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

impl Counts {
    fn add(&mut self, op: &Operation) {
        self.ops += 1;
        match op.outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }

    fn sum(&mut self, c: &Counts) {
        self.ops += c.ops;
        self.ok += c.ok;
        self.fail += c.fail;
        self.unknown += c.unknown;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops (ok {}, fail {}, unknown {})",
            self.ops, self.ok, self.fail, self.unknown
        )
    }
}

/// One key's results.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: Key,
    pub counts: Counts,
    pub linearizability: KeyCheck,
    pub lost_writes: KeyLostWrites,
}

/// The verdict on a whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overall {
    /// Every key linearizable, no lost write, phantom or divergent final read.
    Valid,
    /// At least one key not linearizable, or a lost write, phantom or divergent final read.
    Invalid,
    /// Nothing wrong found, but some key's search ran out of budget.
    Unknown,
}

/// A checked history.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per key, keys in byte order.
    pub keys: Vec<KeyReport>,
    pub counts: Counts,
    pub elapsed: Duration,
    /// The operations, to print the findings.
    history: History,
}

impl Report {
    pub fn overall(&self) -> Overall {
        if self.not_linearizable() > 0 || self.keys.iter().any(|k| !k.lost_writes.is_clean()) {
            Overall::Invalid
        } else if self.undecided() > 0 {
            Overall::Unknown
        } else {
            Overall::Valid
        }
    }

    /// Keys found not linearizable.
    pub fn not_linearizable(&self) -> usize {
        self.count(|k| k.linearizability.verdict.is_violation())
    }

    /// Keys whose search ran out of budget.
    pub fn undecided(&self) -> usize {
        self.count(|k| matches!(k.linearizability.verdict, Verdict::Unknown(_)))
    }

    /// Acknowledged mutations lost, over all keys.
    pub fn lost_writes(&self) -> usize {
        self.keys.iter().map(|k| k.lost_writes.lost.len()).sum()
    }

    fn count(&self, f: impl Fn(&KeyReport) -> bool) -> usize {
        self.keys.iter().filter(|k| f(k)).count()
    }
}

/// Validates `history`, then checks each key: linearizability (within `opts.budget`) and
/// lost writes.
pub fn check(history: &History, opts: &CheckOptions) -> Result<Report, HistoryError> {
    history.validate()?;
    let start = Instant::now();
    let mut keys = Vec::new();
    let mut total = Counts::default();
    for ix in history.by_key().into_values() {
        let ops: Vec<(usize, &Operation)> = ix.iter().map(|&i| (i, &history.ops[i])).collect();
        let mut counts = Counts::default();
        for (_, o) in &ops {
            counts.add(o);
        }
        total.sum(&counts);
        keys.push(KeyReport {
            key: ops.first().map(|(_, o)| o.key.clone()).unwrap_or_default(),
            counts,
            linearizability: linearizable::check_ops(&ops, &opts.budget, opts.minimize),
            lost_writes: lost_writes::check_ops(&ops),
        });
    }
    Ok(Report {
        keys,
        counts: total,
        elapsed: start.elapsed(),
        history: history.clone(),
    })
}

/// ```text
/// history: 5 ops on 2 keys (ok 4, fail 0, unknown 1), checked in 1.2ms
/// key a: linearizable; 3 ops (ok 3, fail 0, unknown 0); 4 configurations in 0.1ms; 1 final read, 0 of 2 acknowledged mutations lost
/// key b: NOT linearizable; ...
///   cannot linearize ...
/// result: INVALID (1 key not linearizable, 0 lost writes)
/// ```
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history: {} on {} keys, checked in {:.1?}",
            self.counts,
            self.keys.len(),
            self.elapsed
        )?;
        for k in &self.keys {
            let lin = &k.linearizability;
            write!(
                f,
                "key {}: {}; {}; {} configurations in {:.1?}; ",
                key_token(&k.key),
                lin.verdict.label(),
                k.counts,
                lin.states,
                lin.elapsed
            )?;
            let lw = &k.lost_writes;
            if lw.checked() {
                writeln!(
                    f,
                    "{} final read(s), {} of {} acknowledged mutations lost",
                    lw.final_reads.len(),
                    lw.lost.len(),
                    lw.acknowledged
                )?;
            } else {
                writeln!(f, "no final read, lost writes not checked")?;
            }
            match &lin.verdict {
                Verdict::NotLinearizable(a) => {
                    for line in a.to_string().lines() {
                        writeln!(f, "  {line}")?;
                    }
                }
                Verdict::Unknown(why) => writeln!(f, "  undecided: {why}")?,
                Verdict::Linearizable => {}
            }
            write!(
                f,
                "{}",
                Findings {
                    key: lw,
                    history: &self.history
                }
            )?;
        }
        let dirty = self.count(|k| !k.lost_writes.is_clean());
        match self.overall() {
            Overall::Valid => writeln!(f, "result: VALID"),
            Overall::Invalid => writeln!(
                f,
                "result: INVALID ({} keys not linearizable, {} lost writes, {} keys with lost/phantom/divergent final reads)",
                self.not_linearizable(),
                self.lost_writes(),
                dirty
            ),
            Overall::Unknown => writeln!(
                f,
                "result: UNKNOWN ({} keys out of budget, nothing invalid found)",
                self.undecided()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::{Op, Ret};

    fn op(c: u64, k: &str, op: Op, inv: u64, comp: u64, out: Outcome) -> Operation {
        Operation::new(c, k, op, inv, comp, out)
    }

    fn ok_read(v: Option<&str>) -> Outcome {
        Outcome::Ok(Ret::Value(v.map(|s| s.as_bytes().to_vec())))
    }

    fn sample() -> History {
        let wr = |s: &str| Op::Write(s.as_bytes().to_vec());
        let done = || Outcome::Ok(Ret::Done);
        let mut h = History::new();
        // Key a: fine, with an unknown and a failed write.
        h.push(op(1, "a", wr("a1"), 0, 10, done()));
        h.push(op(2, "a", wr("a2"), 5, 50, Outcome::Unknown));
        h.push(op(3, "a", wr("a3"), 12, 20, Outcome::Fail));
        h.push(op(1, "a", Op::Read, 100, 110, ok_read(Some("a2"))));
        // Key b: a stale read, and a lost write.
        h.push(op(1, "b", wr("b1"), 0, 10, done()));
        h.push(op(2, "b", wr("b2"), 20, 30, done()));
        h.push(op(3, "b", Op::Read, 100, 110, ok_read(Some("b1"))));
        // Key c: INCRs, no final read after the last one.
        h.push(op(1, "c", Op::Incr(1), 0, 10, Outcome::Ok(Ret::Int(1))));
        h.push(op(2, "c", Op::Read, 5, 8, ok_read(None)));
        h
    }

    #[test]
    fn report_prints_per_key_verdicts_and_counts() {
        let h = sample();
        let report = check(&h, &CheckOptions::default()).unwrap();
        assert_eq!(report.overall(), Overall::Invalid);
        assert_eq!(report.not_linearizable(), 1);
        assert_eq!(report.lost_writes(), 1);
        assert_eq!(
            report.counts,
            Counts {
                ops: 9,
                ok: 7,
                fail: 1,
                unknown: 1
            }
        );
        let text = report.to_string();
        for needle in [
            "history: 9 ops (ok 7, fail 1, unknown 1) on 3 keys, checked in",
            "key a: linearizable; 4 ops (ok 2, fail 1, unknown 1);",
            "1 final read(s), 0 of 1 acknowledged mutations lost",
            "key b: NOT linearizable; 3 ops (ok 3, fail 0, unknown 0);",
            "  cannot linearize #6 c3 [100..110] b read ok =b1",
            "  LOST #5 c2 [20..30] b write =b2 ok (final read #6 saw =b1)",
            "key c: linearizable;",
            "no final read, lost writes not checked",
            "result: INVALID (1 keys not linearizable, 1 lost writes",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }

    #[test]
    fn saved_history_is_rechecked_the_same() {
        let h = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.txt");
        h.save(&path).unwrap();
        let again = History::load(&path).unwrap();
        let a = check(&h, &CheckOptions::default()).unwrap();
        let b = check(&again, &CheckOptions::default()).unwrap();
        let verdicts = |r: &Report| -> Vec<&str> {
            r.keys
                .iter()
                .map(|k| k.linearizability.verdict.label())
                .collect()
        };
        assert_eq!(verdicts(&a), verdicts(&b));
        assert_eq!(a.lost_writes(), b.lost_writes());
    }

    #[test]
    fn valid_unknown_and_malformed() {
        let mut h = History::new();
        h.push(op(
            1,
            "a",
            Op::Write(b"x".to_vec()),
            0,
            10,
            Outcome::Ok(Ret::Done),
        ));
        h.push(op(1, "a", Op::Read, 11, 12, ok_read(Some("x"))));
        let r = check(&h, &CheckOptions::default()).unwrap();
        assert_eq!(r.overall(), Overall::Valid);
        assert!(r.to_string().ends_with("result: VALID\n"), "{r}");

        let mut h = History::new();
        for o in crate::checker::linearizable::tests::pathological(30) {
            h.push(o);
        }
        // Still pending at the end: no final read, so the divergent reads are not flagged.
        h.push(op(
            9,
            "k",
            Op::Write(b"zz".to_vec()),
            0,
            5000,
            Outcome::Unknown,
        ));
        let opts = CheckOptions {
            budget: Budget {
                max_states: 10_000,
                ..Budget::default()
            },
            minimize: None,
        };
        let r = check(&h, &opts).unwrap();
        assert_eq!(r.overall(), Overall::Unknown);
        assert!(r.to_string().contains("undecided: state budget"), "{r}");

        h.push(op(1, "a", Op::Read, 11, 12, Outcome::Ok(Ret::Done)));
        let err = check(&h, &opts).unwrap_err();
        assert_eq!(err.at, h.len() - 1);
    }

    #[test]
    fn empty_history_is_valid() {
        let r = check(&History::new(), &CheckOptions::default()).unwrap();
        assert_eq!(r.overall(), Overall::Valid);
        assert_eq!(r.keys.len(), 0);
    }
}
