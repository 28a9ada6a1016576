//! Randomized tests of the checker: histories generated from real sequential executions must
//! be accepted, a single injected corruption must be caught, and on small arbitrary histories
//! the WGL search must agree with brute force.

use std::collections::HashSet;
use std::time::Duration;

use super::history::{History, Op, Operation, Outcome, Ret};
use super::linearizable::{Budget, Verdict, check_ops};
use super::report::{CheckOptions, Overall, check};

/// Redis's `string2ll`, written independently of the checker's.
fn string2ll(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i128::from(d - b'0');
    }
    i64::try_from(if neg { -v } else { v }).ok()
}

/// The register, applied sequentially: `Some(reply)` if `op` may complete with `ret` from
/// `state` (updating it), `None` if that reply is impossible.
fn apply(state: &mut Option<Vec<u8>>, op: &Op, ret: Option<&Ret>) -> Option<()> {
    match op {
        Op::Read => match ret {
            Some(Ret::Value(v)) => (v == state).then_some(()),
            _ => Some(()),
        },
        Op::Write(v) => {
            *state = Some(v.clone());
            Some(())
        }
        Op::Delete => {
            if let Some(Ret::Deleted(e)) = ret
                && *e != state.is_some()
            {
                return None;
            }
            *state = None;
            Some(())
        }
        Op::Incr(d) => {
            let cur = match state {
                None => 0,
                Some(b) => string2ll(b)?,
            };
            let new = cur.checked_add(*d)?;
            if let Some(Ret::Int(r)) = ret
                && *r != new
            {
                return None;
            }
            *state = Some(new.to_string().into_bytes());
            Some(())
        }
    }
}

/// One key's history from a real execution: operation `i` takes effect at instant `t_i`
/// (strictly increasing) inside its interval, with its true reply. Unknown operations take
/// effect or not; failed ones do not.
fn execution(rng: &mut fastrand::Rng, key: &str, n: usize, next_value: &mut u64) -> Vec<Operation> {
    execution_with(rng, key, n, next_value, &Mix::default())
}

/// The shape of generated histories.
struct Mix {
    /// Percent of operations that end `ok`, then `unknown` (the rest fail).
    ok: u32,
    unknown: u32,
    /// Each interval extends up to this many ns either side of the instant the operation
    /// takes effect; instants are 1 to 10 ns apart.
    spread: u64,
    /// Percent reads, writes, incrs (the rest deletes).
    reads: u32,
    writes: u32,
    incrs: u32,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            ok: 84,
            unknown: 8,
            spread: 25,
            reads: 40,
            writes: 30,
            incrs: 22,
        }
    }
}

fn execution_with(
    rng: &mut fastrand::Rng,
    key: &str,
    n: usize,
    next_value: &mut u64,
    mix: &Mix,
) -> Vec<Operation> {
    let mut state: Option<Vec<u8>> = None;
    let mut t = 1000u64;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        t += rng.u64(1..=10);
        let invoke = t - rng.u64(0..=mix.spread);
        let complete = t + rng.u64(0..=mix.spread);
        let kind = rng.u32(0..100);
        let op = if kind < mix.reads {
            Op::Read
        } else if kind < mix.reads + mix.writes {
            if rng.u32(0..6) > 0 {
                *next_value += 1;
                Op::Write(format!("v{next_value}").into_bytes())
            } else {
                Op::Write(rng.i64(-5..50).to_string().into_bytes())
            }
        } else if kind < mix.reads + mix.writes + mix.incrs {
            Op::Incr(rng.i64(-3..=5))
        } else {
            Op::Delete
        };
        let class = rng.u32(0..100);
        let (is_ok, is_unknown) = (
            class < mix.ok,
            class >= mix.ok && class < mix.ok + mix.unknown,
        );
        let applies = is_ok || (is_unknown && rng.bool());
        let before = state.clone();
        let ret = match &op {
            Op::Read => Some(Ret::Value(state.clone())),
            Op::Write(_) => Some(Ret::Done),
            Op::Delete => Some(if rng.bool() {
                Ret::Deleted(state.is_some())
            } else {
                Ret::Done
            }),
            Op::Incr(d) => {
                let cur = match &state {
                    None => Some(0),
                    Some(b) => string2ll(b),
                };
                cur.and_then(|c| c.checked_add(*d)).map(Ret::Int)
            }
        };
        // An impossible INCR is an error reply: failed, not applied.
        let outcome = match &ret {
            None => Outcome::Fail,
            Some(r) if is_ok => Outcome::Ok(r.clone()),
            Some(_) if is_unknown => Outcome::Unknown,
            Some(_) => Outcome::Fail,
        };
        if applies && outcome != Outcome::Fail {
            assert!(apply(&mut state, &op, ret.as_ref()).is_some());
        } else {
            state = before;
        }
        let client = rng.u64(0..6);
        ops.push(Operation::new(client, key, op, invoke, complete, outcome));
    }
    // The final read, after everything.
    let end = ops.iter().map(|o| o.complete).max().unwrap_or(0) + 100;
    ops.push(Operation::new(
        99,
        key,
        Op::Read,
        end,
        end + 5,
        Outcome::Ok(Ret::Value(state)),
    ));
    ops
}

fn is_unique_write(o: &Operation) -> Option<&[u8]> {
    match (&o.op, &o.outcome) {
        (Op::Write(v), Outcome::Ok(_)) if v.starts_with(b"v") => Some(v),
        _ => None,
    }
}

fn is_ok_read(o: &Operation) -> bool {
    matches!((&o.op, &o.outcome), (Op::Read, Outcome::Ok(_)))
}

fn set_read(o: &mut Operation, v: Option<&[u8]>) {
    o.outcome = Outcome::Ok(Ret::Value(v.map(<[u8]>::to_vec)));
}

/// Injects one corruption that no linearizable execution can produce; `None` if this history
/// offers no place for the chosen kind. Returns a description.
fn corrupt(rng: &mut fastrand::Rng, ops: &mut [Operation]) -> Option<String> {
    let reads: Vec<usize> = (0..ops.len()).filter(|&i| is_ok_read(&ops[i])).collect();
    let writes: Vec<usize> = (0..ops.len())
        .filter(|&i| is_unique_write(&ops[i]).is_some())
        .collect();
    match rng.u32(0..4) {
        0 => {
            // Stale read: r sees w1's value though w2 followed w1 and completed before r.
            let mut options = Vec::new();
            for &r in &reads {
                for &w1 in &writes {
                    for &w2 in &writes {
                        let (a, b, c) = (&ops[w1], &ops[w2], &ops[r]);
                        if a.precedes(b) && b.precedes(c) {
                            options.push((r, w1));
                        }
                    }
                }
            }
            let &(r, w1) = options.get(rng.usize(0..options.len().max(1)))?;
            let v = is_unique_write(&ops[w1])?.to_vec();
            set_read(&mut ops[r], Some(&v));
            Some(format!("stale read #{r} of #{w1}"))
        }
        1 => {
            let &r = reads.get(rng.usize(0..reads.len().max(1)))?;
            set_read(&mut ops[r], Some(b"never-written"));
            Some(format!("phantom read #{r}"))
        }
        2 => {
            // A read of a value only a failed write tried.
            let failed: Vec<usize> = (0..ops.len())
                .filter(|&i| matches!((&ops[i].op, &ops[i].outcome), (Op::Write(v), Outcome::Fail) if v.starts_with(b"v")))
                .collect();
            let &f = failed.get(rng.usize(0..failed.len().max(1)))?;
            let &r = reads.get(rng.usize(0..reads.len().max(1)))?;
            let Op::Write(v) = ops[f].op.clone() else {
                return None;
            };
            set_read(&mut ops[r], Some(&v));
            Some(format!("read #{r} of failed write #{f}"))
        }
        _ => {
            // A read from the future: it completes before the write of its value is invoked.
            let &w = writes.get(rng.usize(0..writes.len().max(1)))?;
            let &r = reads.get(rng.usize(0..reads.len().max(1)))?;
            let v = is_unique_write(&ops[w])?.to_vec();
            let end = ops[w].invoke.checked_sub(1)?;
            set_read(&mut ops[r], Some(&v));
            ops[r].complete = end;
            ops[r].invoke = end.saturating_sub(rng.u64(0..20));
            Some(format!("read #{r} before write #{w}"))
        }
    }
}

fn verdict(ops: &[Operation], budget: &Budget) -> Verdict {
    let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
    check_ops(&refs, budget, None).verdict
}

const BUDGET: Budget = Budget {
    max_states: 2_000_000,
    max_time: Duration::from_secs(20),
    max_memory: 1 << 30,
};

#[test]
fn histories_of_real_executions_are_accepted() {
    let mixes = [
        Mix::default(),
        // Many unknown outcomes; counters; deletes.
        Mix {
            ok: 55,
            unknown: 40,
            ..Mix::default()
        },
        Mix {
            reads: 30,
            writes: 10,
            incrs: 50,
            ..Mix::default()
        },
        Mix {
            reads: 40,
            writes: 20,
            incrs: 10,
            ..Mix::default()
        },
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut next_value = 0;
    for round in 0..80 {
        let mix = &mixes[round % mixes.len()];
        let mut h = History::new();
        for key in ["a", "b", "c"] {
            let n = rng.usize(20..80);
            for o in execution_with(&mut rng, key, n, &mut next_value, mix) {
                h.push(o);
            }
        }
        // Interleave keys as a real run would.
        h.ops.sort_by_key(|o| o.invoke);
        let opts = CheckOptions {
            budget: BUDGET,
            minimize: Some(Duration::from_secs(2)),
        };
        let report = check(&h, &opts).unwrap();
        assert_eq!(
            report.overall(),
            Overall::Valid,
            "round {round}:\n{report}\n{}",
            h.to_text()
        );
        assert!(report.keys.iter().all(|k| k.lost_writes.checked()));
    }
}

#[test]
fn a_single_corruption_is_caught() {
    let mut rng = fastrand::Rng::with_seed(0xbad);
    let mut next_value = 0;
    let mut caught = [0usize; 4];
    let mut rounds = 0;
    while rounds < 120 {
        let n = rng.usize(20..60);
        let mut ops = execution(&mut rng, "k", n, &mut next_value);
        let Some(what) = corrupt(&mut rng, &mut ops) else {
            continue;
        };
        rounds += 1;
        let kind = ["stale", "phantom", "failed", "before"]
            .iter()
            .position(|k| what.contains(k))
            .unwrap_or(0);
        caught[kind] += 1;
        match verdict(&ops, &BUDGET) {
            Verdict::NotLinearizable(_) => {}
            v => panic!("{what} not caught: {v:?}\n{ops:#?}"),
        }
    }
    assert!(caught.iter().all(|&c| c > 10), "{caught:?}");
}

#[test]
fn stale_final_read_is_a_lost_write() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut next_value = 0;
    let mut found = 0;
    for _ in 0..200 {
        let mut ops = execution(&mut rng, "k", 40, &mut next_value);
        let last = ops.len() - 1;
        // The final read sees a value written before another acknowledged write.
        let writes: Vec<usize> = (0..last)
            .filter(|&i| is_unique_write(&ops[i]).is_some())
            .collect();
        let Some((w1, w2)) = writes
            .iter()
            .flat_map(|&a| writes.iter().map(move |&b| (a, b)))
            .find(|&(a, b)| ops[a].precedes(&ops[b]))
        else {
            continue;
        };
        let v = is_unique_write(&ops[w1]).map(<[u8]>::to_vec);
        set_read(&mut ops[last], v.as_deref());
        let mut h = History::new();
        for o in ops {
            h.push(o);
        }
        let report = check(
            &h,
            &CheckOptions {
                budget: BUDGET,
                minimize: None,
            },
        )
        .unwrap();
        let k = &report.keys[0];
        assert!(k.linearizability.verdict.is_violation(), "{report}");
        assert!(
            k.lost_writes.lost.iter().any(|l| l.index == w2),
            "#{w2} not lost:\n{report}"
        );
        assert_eq!(report.overall(), Overall::Invalid);
        found += 1;
    }
    assert!(found > 50, "{found}");
}

/// Arbitrary small histories, replies drawn at random (mostly not linearizable): up to
/// `max_n` operations, `unknown` percent of them unknown.
fn arbitrary(rng: &mut fastrand::Rng, max_n: usize, unknown: u32) -> Vec<Operation> {
    let written = ["a", "b", "c", "d", "1", "2"];
    let read = ["a", "b", "1", "2", "3"];
    let n = rng.usize(1..=max_n);
    (0..n)
        .map(|_| {
            let invoke = rng.u64(0..30);
            let complete = invoke + rng.u64(0..15);
            let op = match rng.u32(0..4) {
                0 => Op::Read,
                1 => Op::Write(written[rng.usize(0..written.len())].as_bytes().to_vec()),
                2 => Op::Incr(rng.i64(-1..=2)),
                _ => Op::Delete,
            };
            let ret = match &op {
                Op::Read => Ret::Value(match rng.usize(0..=read.len()) {
                    0 => None,
                    i => Some(read[i - 1].as_bytes().to_vec()),
                }),
                Op::Write(_) => Ret::Done,
                Op::Incr(_) => Ret::Int(rng.i64(-1..4)),
                Op::Delete => match rng.u32(0..3) {
                    0 => Ret::Done,
                    1 => Ret::Deleted(false),
                    _ => Ret::Deleted(true),
                },
            };
            let class = rng.u32(0..100);
            let outcome = if class < unknown {
                Outcome::Unknown
            } else if class < unknown + 10 {
                Outcome::Fail
            } else {
                Outcome::Ok(ret)
            };
            Operation::new(rng.u64(0..3), "k", op, invoke, complete, outcome)
        })
        .collect()
}

/// Exhaustive: is there an order of all `ok` operations and some `unknown` ones, respecting
/// real time, that the register accepts? (Memoizes failed (placed set, register) pairs.)
fn brute_force(ops: &[Operation]) -> bool {
    type Failed = HashSet<(u64, Option<Vec<u8>>)>;
    let live: Vec<&Operation> = ops.iter().filter(|o| o.outcome != Outcome::Fail).collect();
    assert!(live.len() <= 64);
    fn dfs(live: &[&Operation], placed: u64, state: &Option<Vec<u8>>, failed: &mut Failed) -> bool {
        let is_placed = |j: usize| placed & (1 << j) != 0;
        if (0..live.len()).all(|j| is_placed(j) || !live[j].is_ok()) {
            return true;
        }
        if failed.contains(&(placed, state.clone())) {
            return false;
        }
        for i in 0..live.len() {
            // Not placed, and everything that must come before it is (unknown operations
            // precede nothing, and need never be placed).
            if is_placed(i) || (0..live.len()).any(|j| !is_placed(j) && live[j].precedes(live[i])) {
                continue;
            }
            let ret = match &live[i].outcome {
                Outcome::Ok(r) => Some(r),
                _ => None,
            };
            let mut s = state.clone();
            if apply(&mut s, &live[i].op, ret).is_some() && dfs(live, placed | 1 << i, &s, failed) {
                return true;
            }
        }
        failed.insert((placed, state.clone()));
        false
    }
    dfs(&live, 0, &None, &mut HashSet::new())
}

fn agree_with_brute_force(seed: u64, cases: usize, max_n: usize, unknown: u32) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut yes, mut no) = (0, 0);
    for i in 0..cases {
        let ops = arbitrary(&mut rng, max_n, unknown);
        let expected = brute_force(&ops);
        let got = verdict(&ops, &Budget::UNLIMITED);
        assert_eq!(
            got.is_linearizable(),
            expected,
            "case {i}: {got:?}\n{ops:#?}"
        );
        assert!(!matches!(got, Verdict::Unknown(_)));
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(
        yes > cases / 8 && no > cases / 8,
        "{yes} linearizable, {no} not"
    );
}

#[test]
fn wgl_agrees_with_brute_force_on_small_histories() {
    agree_with_brute_force(42, 4000, 7, 20);
}

#[test]
fn wgl_agrees_with_brute_force_with_many_unknowns() {
    agree_with_brute_force(43, 2000, 10, 50);
}

#[test]
fn witnesses_are_non_linearizable_sub_histories() {
    let mut rng = fastrand::Rng::with_seed(1234);
    let mut seen = 0;
    for _ in 0..400 {
        let ops = arbitrary(&mut rng, 7, 20);
        let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
        let c = check_ops(&refs, &Budget::UNLIMITED, Some(Duration::from_secs(2)));
        let Verdict::NotLinearizable(a) = c.verdict else {
            continue;
        };
        seen += 1;
        let witness: Vec<Operation> = a.witness.iter().map(|w| w.op.clone()).collect();
        assert!(!witness.is_empty());
        assert!(!brute_force(&witness), "witness is linearizable: {a}");
        for w in &a.witness {
            let orig = &ops[w.index];
            assert_eq!((&w.op.op, w.op.invoke), (&orig.op, orig.invoke));
            assert_eq!(w.weakened, w.op.outcome != orig.outcome);
        }
    }
    assert!(seen > 100, "{seen}");
}

/// Timing on long valid histories and on corrupted ones (release build):
/// `cargo test --release -p simplekv-benches --lib long_histories -- --ignored --nocapture`.
#[test]
#[ignore]
fn long_histories_timing() {
    let mut rng = fastrand::Rng::with_seed(99);
    let mut next_value = 0;
    for n in [1000usize, 5000, 20000] {
        let ops = execution(&mut rng, "k", n, &mut next_value);
        let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
        let c = check_ops(&refs, &Budget::default(), None);
        eprintln!(
            "valid, {n} ops ({unknown} unknown): {} after {} configurations in {:?}",
            c.verdict.label(),
            c.states,
            c.elapsed
        );
    }
    for n in [300usize, 1000, 3000] {
        let (mut caught, mut total) = (0, Duration::ZERO);
        let mut done = 0;
        while done < 10 {
            let mut ops = execution(&mut rng, "k", n, &mut next_value);
            if corrupt(&mut rng, &mut ops).is_none() {
                continue;
            }
            done += 1;
            let refs: Vec<(usize, &Operation)> = ops.iter().enumerate().collect();
            let c = check_ops(&refs, &Budget::default(), None);
            assert!(!c.verdict.is_linearizable());
            caught += usize::from(c.verdict.is_violation());
            total += c.elapsed;
        }
        eprintln!(
            "corrupted, {n} ops: {caught}/10 caught, {:?} each on average",
            total / 10
        );
    }
}

/// Many more random cases than the regular tests (release build, about a minute):
/// `cargo test --release -p simplekv-benches --lib campaign -- --ignored`.
#[test]
#[ignore]
fn brute_force_and_execution_campaign() {
    for seed in 0..20 {
        agree_with_brute_force(1000 + seed, 20000, 10, 50);
        agree_with_brute_force(2000 + seed, 20000, 9, 25);
        agree_with_brute_force(3000 + seed, 20000, 12, 70);
    }
    let mixes = [
        Mix {
            ok: 55,
            unknown: 40,
            ..Mix::default()
        },
        Mix {
            ok: 40,
            unknown: 55,
            reads: 30,
            writes: 10,
            incrs: 50,
            ..Mix::default()
        },
        Mix {
            ok: 60,
            unknown: 35,
            reads: 40,
            writes: 20,
            incrs: 10,
            ..Mix::default()
        },
        Mix {
            ok: 70,
            unknown: 25,
            reads: 50,
            writes: 50,
            incrs: 0,
            spread: 60,
        },
    ];
    let mut rng = fastrand::Rng::with_seed(77);
    let mut next_value = 0;
    let mut unknowns = 0;
    for round in 0..400 {
        let mix = &mixes[round % mixes.len()];
        let ops = execution_with(&mut rng, "k", 300, &mut next_value, mix);
        let v = verdict(
            &ops,
            &Budget {
                max_states: 3_000_000,
                ..Budget::default()
            },
        );
        assert!(!v.is_violation(), "round {round}: {v:?}");
        if !v.is_linearizable() {
            unknowns += 1;
        }
    }
    eprintln!("valid executions undecided: {unknowns}/400");
}
