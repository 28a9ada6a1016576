//! Crash safety with a real process killed by SIGKILL (the sled approach): the test re-runs
//! its own binary as a child that writes forever (`crash_child_writer`), kills it at a random
//! moment, reopens the directory and compares it with a model recomputed from the operation
//! counter, then starts the child again on the same directory, many times over.
//!
//! Every operation is a deterministic function of its number, and writes at most one record,
//! so the recovered log end tells exactly which prefix of the operations survived. Every
//! operation the child reported as committed (`@@synced <ops> <log_end>`, printed only after
//! `commit()` returned with `Durability::Always`) must be in it.
//!
//! Also here: merge crash points that a kill rarely hits, reproduced by committing the
//! outputs of a merge one at a time as `install_merge` does and "crashing" in between.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use simplekv_engine::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use simplekv_engine::{Durability, Options, Store};

const DIR_ENV: &str = "SIMPLEKV_CRASH_DIR";
const START_ENV: &str = "SIMPLEKV_CRASH_START";
const MODE_ENV: &str = "SIMPLEKV_CRASH_MODE";

const KEYS: u64 = 48;
const COMMIT_EVERY: u64 = 4;
/// Expiries are far in the future (year 2096): keys never expire during the test, so whether
/// an operation writes a record depends only on the model.
const FAR: u64 = 4_000_000_000_000;

fn opts() -> Options {
    Options {
        segment_size: 64 << 10,
        durability: Durability::Always,
        ..Options::default()
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(k: u64) -> Vec<u8> {
    format!("key:{k:03}").into_bytes()
}

/// The value op `i` writes: its number, then bytes derived from it (0..300 bytes in all).
fn value(i: u64) -> Vec<u8> {
    let len = (mix(i ^ 0xabcd) % 300) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..len).map(|j| (mix(i) >> (j % 56)) as u8 ^ j as u8));
    v
}

#[derive(Debug)]
enum CrashOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Expire(Vec<u8>, Option<u64>),
    Clear,
}

fn op(i: u64) -> CrashOp {
    let h = mix(i);
    let k = key(h % KEYS);
    match (h >> 20) % 1000 {
        0 => CrashOp::Clear,
        1..=600 => CrashOp::Put(k, value(i)),
        601..=800 => CrashOp::Delete(k),
        _ if h & 1 == 0 => CrashOp::Expire(k, Some(FAR + i)),
        _ => CrashOp::Expire(k, None),
    }
}

type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// The model: the state after `ops` operations and how many records they wrote.
struct Model {
    state: State,
    ops: u64,
    records: u64,
}

impl Model {
    /// Applies the next operation; returns whether it writes a record.
    fn step(&mut self) -> bool {
        let wrote = match op(self.ops) {
            CrashOp::Put(k, v) => {
                self.state.insert(k, (v, None));
                true
            }
            CrashOp::Delete(k) => self.state.remove(&k).is_some(),
            CrashOp::Expire(k, e) => match self.state.get_mut(&k) {
                Some(entry) => {
                    entry.1 = e;
                    true
                }
                None => false,
            },
            CrashOp::Clear => {
                self.state.clear();
                true
            }
        };
        self.ops += 1;
        self.records += u64::from(wrote);
        wrote
    }

    /// Moves forward to the first operation count whose records end at `log_end`.
    fn advance_to(&mut self, log_end: u64) {
        assert!(
            self.records <= log_end,
            "the log went backwards: {log_end} < {}",
            self.records
        );
        while self.records < log_end {
            self.step();
            assert!(self.ops < 100_000_000, "log end {log_end} is never reached");
        }
    }
}

/// Applies operation `i` to the store, checking the LSN it gets.
fn apply(s: &mut Store, i: u64) {
    let end = s.log_end();
    match op(i) {
        CrashOp::Put(k, v) => {
            assert_eq!(s.put(&k, &v, None).unwrap(), end, "op {i}: LSNs continue");
        }
        CrashOp::Delete(k) => {
            s.delete(&k).unwrap();
        }
        CrashOp::Expire(k, e) => {
            s.set_expire(&k, e).unwrap();
        }
        CrashOp::Clear => {
            assert_eq!(s.clear().unwrap(), end, "op {i}: LSNs continue");
        }
    }
}

fn dump(s: &Store) -> State {
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = s.scan(cursor, 16, |k| keys.push(k.to_vec()));
        if cursor == 0 {
            break;
        }
    }
    keys.into_iter()
        .map(|k| {
            let v = match s.get(&k) {
                Ok(Some(v)) => v,
                Ok(None) => panic!("scanned key {k:?} has no value"),
                Err(e) => panic!("value of {k:?} is unreadable: {e}"),
            };
            let e = s.meta(&k).expect("scanned key has metadata").expire;
            (k, (v, e))
        })
        .collect()
}

// ------------------------------------------------------------------------ the child

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Writes only (hint files written now and then).
    Plain,
    /// Writes with merges in between: inline `merge_now`, and off-thread style merges with
    /// writes between start and install.
    Merge,
}

/// Not a test by itself: the body of the child process (see the module documentation).
#[test]
#[ignore = "child process of the crash tests; does nothing unless started by them"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let mode = match std::env::var(MODE_ENV).as_deref() {
        Ok("merge") => Mode::Merge,
        _ => Mode::Plain,
    };
    let mut s = open_when_unlocked(Path::new(&dir), opts()).unwrap();
    println!("@@ready {}", s.log_end());
    let started = Instant::now();
    let mut i = start;
    // Bounded, in case the parent is gone: it kills us long before this.
    while started.elapsed() < Duration::from_secs(60) {
        apply(&mut s, i);
        i += 1;
        if i.is_multiple_of(COMMIT_EVERY) {
            s.commit().unwrap();
            println!("@@synced {i} {}", s.log_end());
        }
        if i.is_multiple_of(97) {
            for j in s.take_hint_jobs() {
                j.run().unwrap();
            }
        }
        if mode == Mode::Merge {
            if i.is_multiple_of(61) {
                s.merge_now(u64::MAX).unwrap();
            } else if i % 61 == 30 {
                s.roll().unwrap();
                if let Some(job) = s.start_merge(u64::MAX).unwrap() {
                    let worker = std::thread::spawn(move || job.run());
                    for _ in 0..COMMIT_EVERY {
                        apply(&mut s, i);
                        i += 1;
                    }
                    s.commit().unwrap();
                    println!("@@synced {i} {}", s.log_end());
                    let out = worker.join().unwrap().unwrap();
                    s.install_merge(out).unwrap();
                    while s.merge_step(8) {
                        apply(&mut s, i);
                        i += 1;
                        if i.is_multiple_of(COMMIT_EVERY) {
                            s.commit().unwrap();
                            println!("@@synced {i} {}", s.log_end());
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------ the parent

enum Line {
    Ready(u64),
    Synced { ops: u64, log_end: u64 },
}

/// Kills the child if the parent fails before killing it on purpose.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Opens a store, waiting out a lock held only by a process about to exec. Tests run in
/// parallel threads of one process, and a child forked for another test holds a copy of every
/// descriptor the parent had open (a directory's lock among them, while the parent was
/// checking that directory) until its exec closes them.
fn open_when_unlocked(dir: &Path, o: Options) -> Result<Store, simplekv_engine::OpenError> {
    let started = Instant::now();
    loop {
        match Store::open(dir, o.clone()) {
            Err(simplekv_engine::OpenError::Locked { .. })
                if started.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn spawn_child(dir: &Path, start: u64, mode: Mode) -> (KillOnDrop, mpsc::Receiver<Line>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(START_ENV, start.to_string())
        .env(
            MODE_ENV,
            match mode {
                Mode::Plain => "plain",
                Mode::Merge => "merge",
            },
        )
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test crash_child_writer ... " on the same line first.
            let Some(at) = line.find("@@") else { continue };
            let mut words = line[at + 2..].split_whitespace();
            let parsed = match (words.next(), words.next(), words.next()) {
                (Some("ready"), Some(e), None) => e.parse().ok().map(Line::Ready),
                (Some("synced"), Some(o), Some(e)) => match (o.parse(), e.parse()) {
                    (Ok(ops), Ok(log_end)) => Some(Line::Synced { ops, log_end }),
                    _ => None,
                },
                _ => None,
            };
            if let Some(p) = parsed
                && tx.send(p).is_err()
            {
                break;
            }
        }
    });
    (KillOnDrop(child), rx)
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Runs kill cycles until `min_cycles` are done and `budget` is spent (at most `max_cycles`).
fn kill_cycles(mode: Mode, min_cycles: usize, max_cycles: usize, budget: Duration) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut model = Model {
        state: State::new(),
        ops: 0,
        records: 0,
    };
    let mut cycles = 0;
    let mut total_synced_ops = 0;
    let mut stats = Stats::default();
    while cycles < max_cycles && (cycles < min_cycles || started.elapsed() < budget) {
        assert!(
            started.elapsed() < budget * 3,
            "{cycles} kill cycles took too long"
        );
        let start = model.ops;
        let (mut guard, rx) = spawn_child(dir.path(), start, mode);
        let child = &mut guard.0;
        // Mostly kill while writing; sometimes while the child is still recovering.
        let early = fastrand::u8(..5) == 0;
        if !early {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Line::Ready(end)) => {
                    assert_eq!(end, model.records, "cycle {cycles}: log end on open")
                }
                Ok(Line::Synced { .. }) => unreachable!("synced before ready"),
                Err(_) => {
                    let _ = child.kill();
                    panic!("child never became ready: {}", stderr_of(child));
                }
            }
        }
        let delay = if early {
            fastrand::u64(0..10)
        } else {
            fastrand::u64(20..300)
        };
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "cycle {cycles}: the child exited by itself ({status}): {}",
                stderr_of(child)
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let mut synced: Option<(u64, u64)> = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            if let Line::Synced { ops, log_end } = line {
                synced = Some((ops, log_end));
            }
        }

        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n.ends_with(".merge")) {
            stats.mid_merge_job += 1;
        }
        // A kill between creating a segment file and writing its header leaves a last
        // segment shorter than the header; recovery must drop it by itself.
        let mut bases: Vec<u64> = names
            .iter()
            .filter_map(|n| segment::parse_segment_name(n))
            .collect();
        bases.sort_unstable();
        if let Some(&last) = bases.last() {
            let p = segment::segment_path(dir.path(), last);
            if std::fs::metadata(&p).unwrap().len() < SEGMENT_HEADER_LEN as u64 {
                stats.torn_headers += 1;
            }
        }
        let use_hints = fastrand::bool();
        let s = match open_when_unlocked(
            dir.path(),
            Options {
                use_hints,
                ..opts()
            },
        ) {
            Ok(s) => s,
            Err(e) => panic!("cycle {cycles}: reopening after the kill failed: {e}"),
        };
        let end = s.log_end();
        let report = s.recovery_report();
        stats.torn_tails += usize::from(report.truncated_tail_bytes > 0);
        stats.mid_install += usize::from(report.leftover_segments_removed > 0);
        stats.from_hints += report.segments_from_hints;
        if let Some((ops, log_end)) = synced {
            assert!(
                end >= log_end,
                "cycle {cycles}: ops up to {ops} (log end {log_end}) were committed, but only {end} records survived"
            );
            total_synced_ops += ops - start;
        }
        model.advance_to(end);
        let got = dump(&s);
        if got != model.state {
            let missing: Vec<_> = model
                .state
                .keys()
                .filter(|k| !got.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let extra: Vec<_> = got
                .keys()
                .filter(|k| !model.state.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let changed: Vec<_> = got
                .iter()
                .filter(|(k, v)| model.state.get(*k).is_some_and(|m| m != *v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            panic!(
                "cycle {cycles} ({mode:?}): after op {} (log end {end}) the state differs: missing {missing:?}, resurrected {extra:?}, changed {changed:?}",
                model.ops
            );
        }
        let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.ends_with(".merge") || n.ends_with(".tmp")
            })
            .collect();
        assert!(
            leftovers.is_empty(),
            "cycle {cycles}: {leftovers:?} left behind"
        );
        drop(s);
        cycles += 1;
    }
    assert!(
        total_synced_ops > 0,
        "the child never got to commit anything in {cycles} cycles"
    );
    eprintln!(
        "{mode:?}: {cycles} kills in {:.1?}, {} ops, {} records, {} live keys; {stats:?}",
        started.elapsed(),
        model.ops,
        model.records,
        model.state.len()
    );
    cycles
}

/// What the kills hit, for the summary line (`--nocapture`).
#[derive(Debug, Default)]
struct Stats {
    /// The kill left a last segment shorter than its header (worked around, see above).
    torn_headers: usize,
    /// Recovery cut a torn tail.
    torn_tails: usize,
    /// A merge job's temporary output was on disk.
    mid_merge_job: usize,
    /// Recovery removed inputs of a half-installed merge.
    mid_install: usize,
    /// Closed segments loaded from hint files.
    from_hints: usize,
}

#[test]
fn every_committed_write_survives_sigkill_and_nothing_else_changes() {
    let cycles = kill_cycles(Mode::Plain, 20, 60, Duration::from_secs(12));
    assert!(cycles >= 20);
}

#[test]
fn sigkill_during_merges_loses_no_committed_write_and_resurrects_no_deleted_key() {
    let cycles = kill_cycles(Mode::Merge, 20, 60, Duration::from_secs(12));
    assert!(cycles >= 20);
}

// ------------------------------------------------------------- merge commit points

fn small_opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Always,
        ..Options::default()
    }
}

/// The `.log.merge` outputs of a merge job that ran but was not installed, oldest first:
/// (base, covered_end).
fn merge_outputs(dir: &Path) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_owned();
            let base: u64 = name.strip_suffix(".log.merge")?.parse().ok()?;
            let bytes = std::fs::read(&p).ok()?;
            let h = SegmentHeader::decode(&bytes).ok()?;
            assert_eq!(h.base, base);
            Some((base, h.covered_end))
        })
        .collect();
    v.sort();
    v
}

/// Does what `install_merge` does for one output: rename it (and its hint) over the input of
/// the same base, delete the other inputs it covers.
fn commit_output(dir: &Path, base: u64, covered_end: u64) {
    let log = segment::segment_path(dir, base);
    let hint = segment::hint_path(dir, base);
    std::fs::rename(format!("{}.merge", log.display()), &log).unwrap();
    std::fs::rename(format!("{}.merge", hint.display()), &hint).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let Some(b) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment::parse_segment_name)
        else {
            continue;
        };
        if b > base && b < covered_end {
            std::fs::remove_file(&p).unwrap();
            let _ = std::fs::remove_file(p.with_extension("hint"));
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Runs a merge job without installing it, then for every k "crashes" after the first k
/// outputs were committed, reopens and compares with the state before the merge.
fn check_every_commit_point(dir: &Path, s: &mut Store) {
    s.commit().unwrap();
    s.roll().unwrap();
    let expected = dump(s);
    let out = s.start_merge(u64::MAX).unwrap().expect("closed segments");
    let out = out.run().unwrap();
    let outputs = merge_outputs(dir);
    assert!(
        outputs.len() >= 2,
        "the workload must give a merge of several outputs: {outputs:?}"
    );
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir, crashed.path());
    out.discard();
    for (k, &(base, covered_end)) in outputs.iter().enumerate() {
        commit_output(crashed.path(), base, covered_end);
        // Open a copy: recovery cleans up, and the next commit point builds on this one.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), copy.path());
        let reopened = Store::open(copy.path(), small_opts()).unwrap();
        let got = dump(&reopened);
        assert_eq!(
            got.len(),
            expected.len(),
            "crash after committing {} of {} outputs: keys differ",
            k + 1,
            outputs.len()
        );
        assert_eq!(
            got,
            expected,
            "crash after committing {} of {} outputs",
            k + 1,
            outputs.len()
        );
    }
}

#[test]
fn a_merge_interrupted_between_output_commits_recovers_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), small_opts()).unwrap();
    for round in 0..4u64 {
        for k in 0..60u64 {
            if (k + round) % 7 == 0 {
                s.delete(&key(k)).unwrap();
            } else {
                s.put(&key(k), &value(round * 100 + k), None).unwrap();
            }
        }
        if round == 1 {
            s.clear().unwrap();
        }
    }
    check_every_commit_point(dir.path(), &mut s);
}

/// A merge folds an `Expire` into the value it applies to, and the rewritten record takes the
/// `Expire`'s LSN, so the value moves to the output covering that later LSN. Committing the
/// earlier output first then deletes the only copy of the value while the later input, not yet
/// replaced, still holds just the `Expire`.
#[test]
fn a_merge_interrupted_between_output_commits_keeps_values_whose_expiry_changed_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), small_opts()).unwrap();
    s.put(b"victim", b"the only copy", None).unwrap();
    for round in 0..3u64 {
        for k in 0..60u64 {
            s.put(&key(k), &value(round * 100 + k), None).unwrap();
        }
    }
    assert!(s.set_expire(b"victim", Some(FAR)).unwrap());
    check_every_commit_point(dir.path(), &mut s);
}
